//! Pub/Sub resource names from the article's flags.
//!
//! The article passes some names as short ids beside a project flag
//! (`--pubsub_project_id P --pubsub_topic common-topic`) and others in full
//! (`--output_topic projects/P/topics/df_out`). Both are accepted everywhere.

/// `projects/{project}/topics/{name}`, unless `name` is already a full topic name.
pub fn topic(project: Option<&str>, name: &str) -> anyhow::Result<String> {
    full(project, "topics", name)
}

/// `projects/{project}/subscriptions/{name}`, unless `name` is already a full name.
pub fn subscription(project: Option<&str>, name: &str) -> anyhow::Result<String> {
    full(project, "subscriptions", name)
}

fn full(project: Option<&str>, kind: &str, name: &str) -> anyhow::Result<String> {
    if name.starts_with("projects/") {
        let parts: Vec<&str> = name.split('/').collect();
        anyhow::ensure!(
            parts.len() == 4 && parts[2] == kind && parts.iter().all(|p| !p.is_empty()),
            "`{name}` is not a {kind} name of the form projects/PROJECT/{kind}/ID"
        );
        return Ok(name.to_owned());
    }
    anyhow::ensure!(!name.is_empty() && !name.contains('/'), "`{name}` is not a valid {kind} id");
    let project = project.ok_or_else(|| {
        anyhow::anyhow!(
            "`{name}` needs a project: pass --pubsub_project_id (the pipeline: --project) or set \
             GOOGLE_CLOUD_PROJECT, or give the full name projects/PROJECT/{kind}/{name}"
        )
    })?;
    Ok(format!("projects/{project}/{kind}/{name}"))
}

/// The full name of the subscription `name`, and the project for the topic names that
/// go with it: `project` if given, else the subscription's own (a consumer given only
/// `projects/P/subscriptions/S` finds its topics in `P`).
pub fn subscription_and_project(project: Option<&str>, name: &str) -> anyhow::Result<(String, Option<String>)> {
    let subscription = subscription(project, name)?;
    let project = project.or_else(|| project_of(&subscription)).map(str::to_owned);
    Ok((subscription, project))
}

/// The project of a full resource name.
pub fn project_of(name: &str) -> Option<&str> {
    name.strip_prefix("projects/")?.split('/').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_full_names() {
        assert_eq!(topic(Some("p"), "common-topic").unwrap(), "projects/p/topics/common-topic");
        assert_eq!(topic(None, "projects/q/topics/df_out").unwrap(), "projects/q/topics/df_out");
        assert_eq!(subscription(Some("p"), "df_subscribe").unwrap(), "projects/p/subscriptions/df_subscribe");
        assert!(topic(None, "common-topic").is_err());
        assert!(topic(Some("p"), "projects/q/subscriptions/s").is_err());
        assert_eq!(project_of("projects/q/topics/t"), Some("q"));
        let (full, project) = subscription_and_project(None, "projects/q/subscriptions/s").unwrap();
        assert_eq!((full.as_str(), project.as_deref()), ("projects/q/subscriptions/s", Some("q")));
        let (_, project) = subscription_and_project(Some("p"), "projects/q/subscriptions/s").unwrap();
        assert_eq!(project.as_deref(), Some("p"), "a given project wins");
    }
}

//! `publisher keyring`: administration of a local keyring file, as Tink's `tinkey` and
//! Cloud KMS name things: versions enabled, disabled or destroyed, one primary.

use std::path::PathBuf;

use envelope::kms::KeySign as _;
use envelope::kms::local::{Keyring, LocalKms, Purpose};
use envelope::{KeyName, KeyVersionName};

use crate::args::KeyringAction;

pub async fn run(action: KeyringAction, path: PathBuf) -> anyhow::Result<()> {
    // Only `create` makes a keyring; any other action on a missing file is a typo.
    if !matches!(action, KeyringAction::Create { .. }) && !path.exists() {
        anyhow::bail!(
            "there is no keyring at {} (make one with `publisher keyring --keyring {} create KEY`)",
            path.display(),
            path.display()
        );
    }
    let key = |text: &str| text.parse::<KeyName>();
    // Each change holds the keyring's lock from reading it to writing it back.
    let edit = |change: &dyn Fn(&mut Keyring) -> Result<String, envelope::kms::local::KeyringError>| {
        Keyring::edit(&path, change)
    };
    let said = match action {
        KeyringAction::Create { key: text, if_missing, purpose } => {
            let name = key(&text)?;
            edit(&|keyring| {
                if if_missing && keyring.list().iter().any(|info| info.name == name) {
                    return Ok(format!("{name} exists"));
                }
                keyring.create_for(&name, purpose)?;
                Ok(format!("created {name} (version 1) in {}", path.display()))
            })?
        }
        KeyringAction::PublicKey { key_version } => {
            let name: KeyVersionName = key_version.parse()?;
            let der = LocalKms::open(&path)?.public_key(&name).await?;
            envelope::public_key_pem(&der).trim_end().to_owned()
        }
        KeyringAction::Rotate { key: text } => {
            let name = key(&text)?;
            edit(&|keyring| Ok(format!("rotated {name}: version {} is primary", keyring.rotate(&name)?)))?
        }
        KeyringAction::AddVersion { key: text } => {
            let name = key(&text)?;
            edit(&|keyring| {
                Ok(format!("added {name} version {} (not primary: promote it)", keyring.add_version(&name)?))
            })?
        }
        KeyringAction::Promote { key: text, version } => {
            let name = key(&text)?;
            edit(&|keyring| keyring.promote(&name, version).map(|()| format!("{name}: version {version} is primary")))?
        }
        KeyringAction::Disable { key: text, version } => {
            let name = key(&text)?;
            edit(&|keyring| keyring.disable(&name, version).map(|()| format!("{name}: version {version} disabled")))?
        }
        KeyringAction::Enable { key: text, version } => {
            let name = key(&text)?;
            edit(&|keyring| keyring.enable(&name, version).map(|()| format!("{name}: version {version} enabled")))?
        }
        KeyringAction::Destroy { key: text, version, yes: _ } => {
            let name = key(&text)?;
            edit(&|keyring| keyring.destroy(&name, version).map(|()| format!("{name}: version {version} destroyed")))?
        }
        KeyringAction::List => {
            let lines: Vec<String> = Keyring::load(&path)?
                .list()
                .into_iter()
                .map(|info| {
                    let purpose = match info.purpose {
                        Purpose::EncryptDecrypt => "encrypt",
                        _ => "sign",
                    };
                    let versions: Vec<String> =
                        info.versions.iter().map(|(version, state)| format!("{version}:{state}")).collect();
                    format!(
                        "{}  purpose={purpose}  primary={}  versions={}",
                        info.name,
                        info.primary,
                        versions.join(",")
                    )
                })
                .collect();
            lines.join("\n")
        }
    };
    if !said.is_empty() {
        println!("{said}");
    }
    Ok(())
}

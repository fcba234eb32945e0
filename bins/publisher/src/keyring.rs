//! `publisher keyring`: administration of a local keyring file.

use std::path::PathBuf;

use envelope::kms::KeySign as _;
use envelope::kms::local::{Keyring, LocalKms, Purpose};
use envelope::{KeyName, KeyVersionName};

use crate::args::KeyringAction;

pub async fn run(action: KeyringAction, path: PathBuf) -> anyhow::Result<()> {
    // Only `create` makes a keyring; the other actions on a missing file are a typo.
    let mut keyring = match action {
        KeyringAction::Create { .. } => Keyring::load_or_new(&path)?,
        _ if !path.exists() => anyhow::bail!(
            "there is no keyring at {} (make one with `publisher keyring --keyring {} create KEY`)",
            path.display(),
            path.display()
        ),
        _ => Keyring::load(&path)?,
    };
    match action {
        KeyringAction::Create { key, if_missing, purpose } => {
            let name: KeyName = key.parse()?;
            if if_missing && keyring.list().iter().any(|info| info.name == name) {
                println!("{name} exists");
                return Ok(());
            }
            keyring.create_for(&name, purpose)?;
            keyring.save()?;
            println!("created {name} (version 1) in {}", path.display());
        }
        KeyringAction::PublicKey { key_version } => {
            let name: KeyVersionName = key_version.parse()?;
            let der = LocalKms::open(&path)?.public_key(&name).await?;
            print!("{}", envelope::public_key_pem(&der));
        }
        KeyringAction::Rotate { key } => {
            let name: KeyName = key.parse()?;
            let version = keyring.rotate(&name)?;
            keyring.save()?;
            println!("rotated {name}: version {version} is primary");
        }
        KeyringAction::List => {
            for info in keyring.list() {
                let versions: Vec<String> = info.versions.iter().map(u32::to_string).collect();
                let purpose = match info.purpose {
                    Purpose::EncryptDecrypt => "encrypt",
                    Purpose::AsymmetricSign => "sign",
                };
                println!("{}  purpose={purpose}  primary={}  versions={}", info.name, info.primary, versions.join(","));
            }
        }
    }
    Ok(())
}

//! `outpost sign`: a signed link for a tenant's `[tenant.signed_urls]`,
//! made with the same keys (read from the same secrets) and the same code
//! as the node's check and the policies' `sign-url`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Config, FieldError};
use crate::secrets::Secrets;
use crate::signed_url::SignedUrls;

#[derive(clap::Args)]
pub struct SignArgs {
    /// The config file that declares the tenant.
    #[arg(long, short)]
    config: PathBuf,
    /// The tenant's id.
    #[arg(long)]
    tenant: String,
    /// The path to sign (with an optional query), e.g. `/downloads/a.zip`.
    #[arg(long)]
    path: String,
    /// How long the link is valid: seconds, or a number with `s`, `m`,
    /// `h` or `d`, e.g. `1h`.
    #[arg(long, value_parser = parse_duration)]
    expires_in: Duration,
    /// The client's address, for an nginx `md5_template` that uses
    /// `$remote_addr`.
    #[arg(long)]
    client_ip: Option<IpAddr>,
    /// Printed before the signed path, e.g. `https://files.example.com`.
    #[arg(long, default_value = "")]
    base: String,
}

pub fn run(args: SignArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let source = config.source_name.clone();
    let (index, tenant) = config
        .tenants
        .iter()
        .enumerate()
        .find(|(_, t)| t.id == args.tenant)
        .ok_or_else(|| anyhow::anyhow!("{source}: no tenant {:?}", args.tenant))?;
    let within =
        |e: FieldError| config.field_error(&source, e.within(&format!("tenant[{index}].")));
    let signed = tenant.signed_urls.as_ref().ok_or_else(|| {
        within(FieldError::new(
            "signed_urls",
            "the tenant has no [tenant.signed_urls] to sign with",
        ))
    })?;
    let secrets = Secrets::resolve(&tenant.secrets, &config.base_dir).map_err(within)?;
    let urls = SignedUrls::new(signed, &secrets).map_err(within)?;
    let now = crate::tenant::unix_now();
    let link = urls
        .sign(
            &args.path,
            now + args.expires_in.as_secs(),
            now,
            args.client_ip,
        )
        .map_err(|e| anyhow::anyhow!("--path: {e}"))?;
    println!("{}{link}", args.base.trim_end_matches('/'));
    Ok(())
}

/// `90`, `90s`, `15m`, `1h` or `2d`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 3600, 90s, 15m, 1h or 2d"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{text:?}: the unit is s, m, h or d")),
    };
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_take_seconds_and_units() {
        let secs = |t| super::parse_duration(t).map(|d| d.as_secs());
        assert_eq!(secs("3600"), Ok(3600));
        assert_eq!(secs("90s"), Ok(90));
        assert_eq!(secs("15m"), Ok(900));
        assert_eq!(secs("1h"), Ok(3600));
        assert_eq!(secs("2d"), Ok(172_800));
        assert!(secs("1w").is_err());
        assert!(secs("h").is_err());
    }
}

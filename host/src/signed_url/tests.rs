use std::net::IpAddr;

use http::{HeaderMap, HeaderValue, Uri};

use super::*;

const NOW: u64 = 1_800_000_000;

fn urls(format: SignedUrlFormat, keys: &[(&str, &[u8])], signer: &str) -> SignedUrls {
    let keys: Vec<(String, Secret)> = keys
        .iter()
        .map(|(id, k)| (id.to_string(), Secret::from(*k)))
        .collect();
    let signer = keys.iter().position(|(id, _)| id == signer).unwrap();
    SignedUrls {
        format,
        keys,
        signer,
        paths: vec!["/dl/".into()],
        skew_s: 30,
        on_invalid: OnInvalid::Deny,
        strip_params: match format {
            SignedUrlFormat::HmacSha256 => vec!["exp".into(), "kid".into(), "sig".into()],
            SignedUrlFormat::NginxMd5 => vec!["md5".into(), "expires".into()],
            SignedUrlFormat::EdgeAuth => vec!["hdnts".into()],
        },
        token_name: "hdnts".into(),
        token_in: TokenIn::Query,
        md5_template: "$secure_link_expires$uri $secret".into(),
    }
}

const KEY_A: &[u8] = b"key-a-0123456789abcdef";
const KEY_B: &[u8] = b"key-b-0123456789abcdef";

fn check_at(urls: &SignedUrls, target: &str, now: u64) -> Checked {
    let uri: Uri = target.parse().unwrap();
    urls.check(&uri, &HeaderMap::new(), IpAddr::from([127, 0, 0, 1]), now)
}

fn verdict(urls: &SignedUrls, target: &str, now: u64) -> SignatureVerdict {
    check_at(urls, target, now).verdict
}

#[test]
fn hmac_links_pass_until_they_expire_and_fail_when_touched() {
    let u = urls(SignedUrlFormat::HmacSha256, &[("a", KEY_A)], "a");
    let link = u.sign("/dl/report.pdf", NOW + 3600, NOW, None).unwrap();
    assert!(link.starts_with("/dl/report.pdf?exp="), "{link}");
    assert_eq!(verdict(&u, &link, NOW), SignatureVerdict::Valid);
    // Within the skew after expiry, then gone (410).
    assert_eq!(verdict(&u, &link, NOW + 3600 + 30), SignatureVerdict::Valid);
    assert_eq!(
        verdict(&u, &link, NOW + 3600 + 31),
        SignatureVerdict::Expired
    );
    // Another path, a later expiry, a changed signature: 403.
    let other = link.replace("report", "secret");
    assert_eq!(verdict(&u, &other, NOW), SignatureVerdict::Invalid);
    let later = link.replace(
        &format!("exp={}", NOW + 3600),
        &format!("exp={}", NOW + 7200),
    );
    assert_eq!(verdict(&u, &later, NOW), SignatureVerdict::Invalid);
    let flipped = format!("{}0", &link[..link.len() - 1]);
    let flipped = if flipped == link {
        format!("{}1", &link[..link.len() - 1])
    } else {
        flipped
    };
    assert_eq!(verdict(&u, &flipped, NOW), SignatureVerdict::Invalid);
    // Expired and tampered is 403, not 410: only a good signature tells.
    assert_eq!(verdict(&u, &other, NOW + 7200), SignatureVerdict::Invalid);
    assert_eq!(
        verdict(&u, "/dl/report.pdf", NOW),
        SignatureVerdict::Missing
    );
    assert_eq!(
        verdict(&u, "/dl/report.pdf?exp=1", NOW),
        SignatureVerdict::Invalid
    );
    assert_eq!(
        verdict(&u, "/public/a.css", NOW),
        SignatureVerdict::NotChecked
    );
}

#[test]
fn the_token_is_stripped_so_every_users_link_is_one_target() {
    let u = urls(SignedUrlFormat::HmacSha256, &[("a", KEY_A)], "a");
    let one = u.sign("/dl/a.zip?v=2", NOW + 60, NOW, None).unwrap();
    let two = u.sign("/dl/a.zip?v=2", NOW + 120, NOW, None).unwrap();
    assert_ne!(one, two);
    let (one, two) = (check_at(&u, &one, NOW), check_at(&u, &two, NOW));
    assert_eq!(one.verdict, SignatureVerdict::Valid);
    assert_eq!(one.stripped.unwrap().to_string(), "/dl/a.zip?v=2");
    assert_eq!(two.stripped.unwrap().to_string(), "/dl/a.zip?v=2");
}

#[test]
fn two_keys_are_valid_during_a_roll_over_and_a_removed_one_is_not() {
    let old = urls(SignedUrlFormat::HmacSha256, &[("a", KEY_A)], "a");
    let link = old.sign("/dl/x", NOW + 60, NOW, None).unwrap();
    let both = urls(
        SignedUrlFormat::HmacSha256,
        &[("a", KEY_A), ("b", KEY_B)],
        "b",
    );
    assert_eq!(verdict(&both, &link, NOW), SignatureVerdict::Valid);
    let new_link = both.sign("/dl/x", NOW + 60, NOW, None).unwrap();
    assert!(new_link.contains("kid=b"), "{new_link}");
    let only_b = urls(SignedUrlFormat::HmacSha256, &[("b", KEY_B)], "b");
    assert_eq!(verdict(&only_b, &link, NOW), SignatureVerdict::Invalid);
    assert_eq!(verdict(&only_b, &new_link, NOW), SignatureVerdict::Valid);
    // A token without a key id is tried against every key.
    let exp = (NOW + 60).to_string();
    let sig = crate::http::hex::encode(&formats::hmac_sha256(
        &Secret::from(KEY_B),
        format!("/dl/x?exp={exp}").as_bytes(),
    ));
    let no_kid = format!("/dl/x?exp={exp}&sig={sig}");
    assert_eq!(verdict(&both, &no_kid, NOW), SignatureVerdict::Valid);
}

#[test]
fn edge_auth_tokens_check_the_acl_window_and_where_they_are_carried() {
    let u = urls(SignedUrlFormat::EdgeAuth, &[("a", KEY_A)], "a");
    let link = u.sign("/dl/movie.mp4", NOW + 300, NOW, None).unwrap();
    assert!(link.starts_with("/dl/movie.mp4?hdnts=st="), "{link}");
    assert_eq!(verdict(&u, &link, NOW), SignatureVerdict::Valid);
    assert_eq!(verdict(&u, &link, NOW + 400), SignatureVerdict::Expired);
    assert_eq!(
        check_at(&u, &link, NOW).stripped.unwrap().to_string(),
        "/dl/movie.mp4"
    );
    // A wildcard ACL covers a directory, and only it.
    let signed = format!("st={NOW}~exp={}~acl=/dl/season1/*", NOW + 300);
    let mac = crate::http::hex::encode(&formats::hmac_sha256(
        &Secret::from(KEY_A),
        signed.as_bytes(),
    ));
    let token = format!("{signed}~hmac={mac}");
    assert_eq!(
        verdict(&u, &format!("/dl/season1/ep2.mp4?hdnts={token}"), NOW),
        SignatureVerdict::Valid
    );
    assert_eq!(
        verdict(&u, &format!("/dl/season2/ep1.mp4?hdnts={token}"), NOW),
        SignatureVerdict::Invalid
    );
    // Not valid yet (beyond the skew).
    let early = format!("st={}~exp={}~acl=/dl/*", NOW + 600, NOW + 900);
    let mac = crate::http::hex::encode(&formats::hmac_sha256(
        &Secret::from(KEY_A),
        early.as_bytes(),
    ));
    assert_eq!(
        verdict(&u, &format!("/dl/a?hdnts={early}~hmac={mac}"), NOW),
        SignatureVerdict::Invalid
    );
    // In a cookie.
    let mut cookie = urls(SignedUrlFormat::EdgeAuth, &[("a", KEY_A)], "a");
    cookie.token_in = TokenIn::Cookie;
    let token = cookie.sign("/dl/movie.mp4", NOW + 300, NOW, None).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(
        "cookie",
        HeaderValue::from_str(&format!("theme=dark; hdnts={token}")).unwrap(),
    );
    let checked = cookie.check(
        &"/dl/movie.mp4".parse().unwrap(),
        &headers,
        IpAddr::from([127, 0, 0, 1]),
        NOW,
    );
    assert_eq!(checked.verdict, SignatureVerdict::Valid);
}

#[test]
fn nginx_secure_link_md5_matches_nginx_documentation_example() {
    // From nginx's ngx_http_secure_link_module documentation:
    // echo -n '2147483647/s/link127.0.0.1 secret' | openssl md5 -binary
    //   | openssl base64 | tr +/ -_ | tr -d =
    let mut u = urls(SignedUrlFormat::NginxMd5, &[("a", b"secret")], "a");
    u.paths = vec!["/s/".into()];
    u.md5_template = "$secure_link_expires$uri$remote_addr $secret".into();
    let link = "/s/link?md5=_e4Nc3iduzkWRm01TBBNYw&expires=2147483647";
    assert_eq!(verdict(&u, link, NOW), SignatureVerdict::Valid);
    assert_eq!(
        u.sign(
            "/s/link",
            2147483647,
            NOW,
            Some(IpAddr::from([127, 0, 0, 1]))
        )
        .unwrap(),
        link
    );
    assert!(u.sign("/s/link", 2147483647, NOW, None).is_err());
    assert_eq!(
        verdict(
            &u,
            "/s/link?md5=_e4Nc3iduzkWRm01TBBNYw&expires=2147483646",
            NOW
        ),
        SignatureVerdict::Invalid
    );
    // Past its expiry: 410.
    let past = urls(SignedUrlFormat::NginxMd5, &[("a", KEY_A)], "a");
    let link = past.sign("/dl/f", NOW - 100, NOW, None).unwrap();
    assert_eq!(verdict(&past, &link, NOW), SignatureVerdict::Expired);
}

#[test]
fn a_short_key_is_refused_with_its_field() {
    let config: SignedUrlsConfig = toml::from_str(
        r#"
        format = "hmac-sha256"
        keys = { a = "short" }
        "#,
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("outpost-short-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("k"), "only8byt").unwrap();
    let declared = std::collections::BTreeMap::from([(
        "short".to_string(),
        crate::config::SecretSource {
            env: None,
            file: Some("k".into()),
            encoding: Default::default(),
        },
    )]);
    let secrets = Secrets::resolve(&declared, &dir).unwrap();
    let e = SignedUrls::new(&config, &secrets).unwrap_err();
    assert_eq!(e.field, "signed_urls.keys.a");
    assert!(e.message.contains("at least 16"), "{e}");
    assert!(!e.message.contains("only8byt"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

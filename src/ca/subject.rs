//! Subjects written the way `openssl req -subj` takes them: `/CN=Fleet CA/O=Example`.

use anyhow::{bail, Context, Result};
use openssl::x509::{X509Name, X509NameBuilder};

/// Parses `/KEY=value/KEY=value`; `\/` is a literal slash inside a value.
pub fn parse_subject(subject: &str) -> Result<X509Name> {
    let body = subject.strip_prefix('/').with_context(|| {
        format!("subject {subject:?} must start with '/', as in /CN=name/O=org")
    })?;
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next) => current.push(next),
                None => bail!("subject {subject:?} ends with a lone backslash"),
            },
            '/' => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    parts.push(current);

    let mut name = X509NameBuilder::new()?;
    let mut count = 0;
    for part in parts.iter().filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once('=')
            .with_context(|| format!("subject part {part:?} is not KEY=value"))?;
        if value.is_empty() {
            bail!("subject part {part:?} has an empty value");
        }
        name.append_entry_by_text(key.trim(), value)
            .with_context(|| format!("unknown subject attribute {key:?}"))?;
        count += 1;
    }
    if count == 0 {
        bail!("subject {subject:?} is empty");
    }
    Ok(name.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openssl_style() {
        let name = parse_subject("/CN=Fleet CA/O=Ex\\/ample").unwrap();
        let text = crate::x509::name_to_string(&name);
        assert_eq!(text, "CN=Fleet CA, O=Ex/ample");
        assert!(parse_subject("CN=x").is_err());
        assert!(parse_subject("/").is_err());
        assert!(parse_subject("/XX=1").is_err());
        assert!(parse_subject("/CN").is_err());
    }
}

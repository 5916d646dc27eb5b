//! Validated volume and snapshot names, so a name never becomes a path unchecked.

use std::fmt;

use crate::error::{Error, Result};

fn validate(kind: &str, s: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::Invalid(format!("{kind} name {s:?} {why}")));
    if s.is_empty() {
        return bad("is empty");
    }
    if s.len() > 253 {
        return bad("is longer than 253 characters");
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
    {
        return bad(&format!(
            "contains {c:?}: only a-z, 0-9, '-' and '.' are allowed"
        ));
    }
    // Starting and ending with an alphanumeric rules out ".", "..", hidden names and the
    // ".tmp-" prefix that the drivers reserve for half-done operations.
    let first = s.as_bytes()[0];
    let last = s.as_bytes()[s.len() - 1];
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return bad("must start and end with a letter or digit");
    }
    if s.contains("..") {
        return bad("contains \"..\"");
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$m:meta])* $t:ident, $kind:literal) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $t(String);

        impl $t {
            pub fn new(s: impl Into<String>) -> Result<Self> {
                let s = s.into();
                validate($kind, &s)?;
                Ok(Self(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $t {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $t {
            type Error = Error;
            fn try_from(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $t {
            type Error = Error;
            fn try_from(s: String) -> Result<Self> {
                Self::new(s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// A volume name: lowercase DNS-1123 style, at most 253 characters.
    VolName,
    "volume"
);
name_type!(
    /// A snapshot name, with the same rules as a volume name.
    SnapName,
    "snapshot"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_names() {
        for ok in ["a", "pvc-1234", "vol.1", "0", &"a".repeat(253)] {
            assert!(VolName::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_paths_and_junk() {
        for bad in [
            "",
            "..",
            ".",
            "a/b",
            "/abs",
            "A",
            "a..b",
            ".tmp-x",
            "-a",
            "a-",
            "a b",
            "a\0",
            "ü",
            &"a".repeat(254),
        ] {
            let e = SnapName::new(bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Invalid, "{bad:?}");
        }
    }
}

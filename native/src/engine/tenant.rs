//! Tenant IDs, validated as Mimir does (grafana/dskit `tenant.ValidTenantID`): the bytes
//! `a-z A-Z 0-9 ! - _ . * ' ( )`, at most 150 of them, and not `.` or `..`; checked in that
//! order so the message names the same fault Mimir's would.

pub const MAX_TENANT_ID_LENGTH: usize = 150;

/// Why a tenant ID was refused. `Display` is Mimir's wording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantError {
    Missing,
    UnsupportedCharacter { tenant: String, byte: u8 },
    TooLong,
    Unsafe,
}

impl std::fmt::Display for TenantError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing => f.write_str("no org id"),
            Self::UnsupportedCharacter { tenant, byte } => write!(
                f,
                "tenant ID '{tenant}' contains unsupported character '{}'",
                char::from(*byte)
            ),
            Self::TooLong => write!(
                f,
                "tenant ID is too long: max {MAX_TENANT_ID_LENGTH} characters"
            ),
            Self::Unsafe => f.write_str("tenant ID is '.' or '..'"),
        }
    }
}

const fn allowed(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'!' | b'-' | b'_' | b'.' | b'*' | b'\'' | b'(' | b')')
}

/// Validate the value of the tenant header (absent or empty: [`TenantError::Missing`]).
pub fn validate(value: Option<&[u8]>) -> Result<&[u8], TenantError> {
    let id = match value {
        Some(v) if !v.is_empty() => v,
        _ => return Err(TenantError::Missing),
    };
    if let Some(&byte) = id.iter().find(|&&b| !allowed(b)) {
        return Err(TenantError::UnsupportedCharacter {
            tenant: String::from_utf8_lossy(id).into_owned(),
            byte,
        });
    }
    if id.len() > MAX_TENANT_ID_LENGTH {
        return Err(TenantError::TooLong);
    }
    if id == b"." || id == b".." {
        return Err(TenantError::Unsafe);
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mimir_rules() {
        assert_eq!(validate(Some(b"team-a_1.prod")), Ok(&b"team-a_1.prod"[..]));
        assert_eq!(validate(Some(b"(x)*'!")), Ok(&b"(x)*'!"[..]));
        assert_eq!(validate(None), Err(TenantError::Missing));
        assert_eq!(validate(Some(b"")), Err(TenantError::Missing));
        assert_eq!(validate(Some(b".")), Err(TenantError::Unsafe));
        assert_eq!(validate(Some(b"..")), Err(TenantError::Unsafe));
        assert_eq!(validate(Some(&[b'a'; 151])), Err(TenantError::TooLong));
        assert!(validate(Some(&[b'a'; 150])).is_ok());
        let e = validate(Some(b"a|b")).err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("tenant ID 'a|b' contains unsupported character '|'")
        );
        // Characters are checked before the length, as in dskit.
        let mut long = vec![b'/'];
        long.extend([b'a'; 199]);
        assert!(matches!(
            validate(Some(&long)),
            Err(TenantError::UnsupportedCharacter { .. })
        ));
    }
}

//! Absolute paths in normal form, judged alike at admission (mount paths, path roots) and in
//! the gateway (path arguments): a path is plain (no encodings, look-alike characters,
//! traversal, home or device forms, URIs) and absolute, and its normal form drops `.` and
//! repeated slashes. Whether a path lies under a directory is asked of normal forms.

/// The longest path accepted.
pub const MAX_PATH_BYTES: usize = 4096;

/// Unicode characters that render as dots or slashes.
const LOOKALIKES: &[char] = &[
    '\u{2024}', '\u{2025}', '\u{2026}', '\u{FE52}', '\u{FF0E}', // dots
    '\u{2044}', '\u{2215}', '\u{29F8}', '\u{FF0F}', // slashes
    '\u{2216}', '\u{29F5}', '\u{29F9}', '\u{FE68}', '\u{FF3C}', // backslashes
];

/// Why a path is not plain and absolute. The message is safe to show: it never repeats the
/// path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is empty or too long")]
    Length,
    #[error("NUL byte in path")]
    Nul,
    #[error("control character in path")]
    Control,
    #[error("backslash in path")]
    Backslash,
    /// Plain paths need no escapes; a percent sign is an attempt to smuggle `..` or `/` past a
    /// decoder (including overlong UTF-8 such as %c0%ae).
    #[error("percent-encoded characters in path")]
    Percent,
    #[error("look-alike dot or slash characters in path")]
    Lookalike,
    #[error("home-relative path")]
    Home,
    #[error("a URI is not a path")]
    Uri,
    #[error("path must be absolute")]
    Relative,
    #[error("network or device path")]
    Network,
    #[error("'..' in path")]
    Traversal,
    #[error("path segment of dots")]
    Dots,
    #[error("device name in path")]
    Device,
}

/// A Windows device name as a path segment (`CON`, `NUL.txt`, `COM1`, ...).
fn is_windows_device(seg: &str) -> bool {
    let stem = seg.split('.').next().unwrap_or(seg).trim_end().to_ascii_uppercase();
    matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$")
        || (stem.len() == 4
            && (stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.as_bytes()[3].is_ascii_digit())
}

/// The normal form of a plain absolute path.
pub fn normal_form(p: &str) -> Result<String, PathError> {
    if p.is_empty() || p.len() > MAX_PATH_BYTES {
        return Err(PathError::Length);
    }
    if p.contains('\0') {
        return Err(PathError::Nul);
    }
    if p.chars().any(char::is_control) {
        return Err(PathError::Control);
    }
    if p.contains('\\') {
        return Err(PathError::Backslash);
    }
    if p.contains('%') {
        return Err(PathError::Percent);
    }
    if p.chars().any(|c| LOOKALIKES.contains(&c)) {
        return Err(PathError::Lookalike);
    }
    if p.starts_with('~') {
        return Err(PathError::Home);
    }
    if p.contains("://") || p.to_ascii_lowercase().starts_with("file:") {
        return Err(PathError::Uri);
    }
    if !p.starts_with('/') {
        return Err(PathError::Relative);
    }
    if p.starts_with("//") {
        return Err(PathError::Network);
    }
    let mut parts: Vec<&str> = vec![];
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => return Err(PathError::Traversal),
            s if s.trim_end_matches(['.', ' ']).is_empty() => return Err(PathError::Dots),
            s if is_windows_device(s) => return Err(PathError::Device),
            s => parts.push(s),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Whether the normal-form `path` is `dir` or lies under it (`dir` may end in `/`; `/` and
/// the empty string cover everything).
pub fn is_under(path: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    dir.is_empty()
        || path == dir
        || path.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_absolute_paths_have_one_normal_form() {
        assert_eq!(normal_form("/data//a/./b/"), Ok("/data/a/b".to_string()));
        assert_eq!(normal_form("/"), Ok("/".to_string()));
        for (bad, why) in [
            ("", PathError::Length),
            ("/a\0b", PathError::Nul),
            ("/a\nb", PathError::Control),
            ("/a\\b", PathError::Backslash),
            ("/a/%2e%2e/b", PathError::Percent),
            ("/a/\u{FF0E}\u{FF0E}/b", PathError::Lookalike),
            ("~/x", PathError::Home),
            ("file:///etc/passwd", PathError::Uri),
            ("data/x", PathError::Relative),
            ("//server/share", PathError::Network),
            ("/data/../etc", PathError::Traversal),
            ("/data/.../x", PathError::Dots),
            ("/data/NUL.txt", PathError::Device),
        ] {
            assert_eq!(normal_form(bad), Err(why), "{bad:?}");
        }
    }

    #[test]
    fn windows_devices_are_recognised() {
        assert!(is_windows_device("CON"));
        assert!(is_windows_device("nul.txt"));
        assert!(is_windows_device("com1"));
        assert!(!is_windows_device("console.log"));
        assert!(!is_windows_device("com"));
    }

    #[test]
    fn under_means_the_directory_or_below_it() {
        assert!(is_under("/data", "/data"));
        assert!(is_under("/data/x", "/data/"));
        assert!(!is_under("/database", "/data"));
        assert!(is_under("/anything", "/"));
        assert!(!is_under("/etc", "/data"));
    }
}

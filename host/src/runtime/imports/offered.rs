//! What a job may import, by name: the interfaces this host links, for
//! telling a component that imports something else what it could use
//! instead. A test builds a component importing each entry, and one for
//! each interface of the WIT files the host is built from, so this list and
//! the linker cannot drift apart.

/// Every interface the host serves, with the version it serves. WASI 0.2
/// (`wasi:cli`, `wasi:clocks`, `wasi:filesystem`, `wasi:io`, `wasi:random`,
/// `wasi:sockets`) is served whole, at any 0.2.x; the job's context grants
/// no files, network or environment.
pub const SERVED_INTERFACES: &[&str] = &[
    "pinlock:host/distributed-lock@0.2.1",
    "pinlock:host/key-value@0.2.1",
    "pinlock:host/logging@0.2.1",
    "wasi:keyvalue/store@0.2.0-draft2",
    "wasi:keyvalue/atomics@0.2.0-draft2",
    "wasi:keyvalue/batch@0.2.0-draft2",
    "wasi:logging/logging@0.1.0-draft",
    "wasi:distributed-lock/types@0.1.0",
    "wasi:distributed-lock/locker@0.1.0",
];

/// The WASI 0.2 packages wasmtime-wasi links (at 0.2.x).
const WASI_P2: &[&str] =
    &["wasi:cli/", "wasi:clocks/", "wasi:filesystem/", "wasi:io/", "wasi:random/", "wasi:sockets/"];

/// Whether the host serves the import `name` (`package/interface@version`):
/// an entry of [`SERVED_INTERFACES`] of a compatible version, by the rule wasmtime's
/// linker applies (`0.2.0` is served by `0.2.1`; `1.x` by `1.y`; a version
/// with a pre-release tag such as `-draft2` only by itself), or a WASI 0.2
/// interface.
pub(crate) fn is_offered(name: &str) -> bool {
    if WASI_P2.iter().any(|package| name.starts_with(package)) {
        return name.split_once('@').is_some_and(|(_, version)| version.starts_with("0.2."));
    }
    SERVED_INTERFACES.iter().any(|served| served == &name || compatible(served, name))
}

/// Whether two names differ only in versions on one compatible track.
fn compatible(served: &str, import: &str) -> bool {
    match (track(served), track(import)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The part of `name@version` that compatible versions share: `name@1` for
/// 1.x.y, `name@0.2` for 0.2.y, none for 0.0.z or a pre-release.
fn track(name: &str) -> Option<(&str, String)> {
    let (base, version) = name.split_once('@')?;
    if version.contains(['-', '+']) {
        return None;
    }
    let mut parts = version.split('.').map(|part| part.parse::<u64>().ok());
    let (major, minor, _patch) = (parts.next()??, parts.next()??, parts.next()??);
    match (major, minor) {
        (0, 0) => None,
        (0, minor) => Some((base, format!("0.{minor}"))),
        (major, _) => Some((base, major.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::is_offered;

    #[test]
    fn versions_match_as_the_linker_matches_them() {
        assert!(is_offered("pinlock:host/key-value@0.2.1"));
        assert!(is_offered("pinlock:host/key-value@0.2.0"), "0.2.0 is served by 0.2.1");
        assert!(!is_offered("pinlock:host/key-value@0.1.0"));
        assert!(!is_offered("pinlock:host/key-value@0.3.0"));
        assert!(!is_offered("pinlock:host/queue@0.2.1"));
        assert!(is_offered("wasi:keyvalue/store@0.2.0-draft2"));
        assert!(!is_offered("wasi:keyvalue/store@0.2.0-draft"), "a pre-release matches only itself");
        assert!(!is_offered("wasi:keyvalue/watcher@0.2.0-draft2"));
        assert!(is_offered("wasi:cli/stderr@0.2.0"));
        assert!(is_offered("wasi:io/streams@0.2.6"));
        assert!(!is_offered("wasi:cli/stderr@0.3.0"));
        assert!(!is_offered("wasi:http/types@0.2.0"));
    }
}

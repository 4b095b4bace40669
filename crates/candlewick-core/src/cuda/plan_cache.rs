//! The plans the GPU libraries chose kept on disk, so that a new process finds them instead of
//! asking heuristics and compiling again (the one-time costs that make a fresh process's first
//! image slow): cuDNN's convolution plans and compiled attention graphs, cuBLASLt's algorithms.
//!
//! One file per plan, in a folder per library version and GPU (name and compute capability): a
//! first line with the plan's key as text, then the library's own serialization of the plan
//! (cuDNN's JSON for a convolution; the frontend's serialized graph for attention; cuBLASLt's
//! algorithm struct, checked with cublasLtMatmulAlgoCheck before use). A file is used only
//! when its first line is the key asked for; one that cuDNN will not load is built again and
//! written over. Files are written to a temporary name and renamed, so processes sharing the
//! folder never read half a file. The cache is best effort: a folder that cannot be written
//! leaves every plan built in memory, as without it.
//!
//! `CANDLEWICK_PLAN_CACHE` names the folder; `0` (or `off`) turns the cache off. Unset, it is
//! `$XDG_CACHE_HOME/candlewick/plans` or `~/.cache/candlewick/plans`.
//!
//! Plain files, no GPU: compiled in every build so that its tests run everywhere; the cuDNN
//! and cuBLASLt code (`cudnn::op`, `cudnn::sdpa`, `cublaslt`) names the folder of its device and
//! does the serializing.
#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The cache's root folder, or None when it is turned off or no home is known (read once).
fn root() -> Option<&'static Path> {
    static ROOT: OnceLock<Option<PathBuf>> = OnceLock::new();
    ROOT.get_or_init(|| {
        root_from(
            std::env::var_os("CANDLEWICK_PLAN_CACHE"),
            std::env::var_os("XDG_CACHE_HOME"),
            std::env::var_os("HOME"),
        )
    })
    .as_deref()
}

fn root_from(
    setting: Option<std::ffi::OsString>,
    xdg: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    match setting {
        Some(s) if matches!(s.to_str(), Some("0" | "off" | "false")) => None,
        Some(s) if !s.is_empty() => Some(PathBuf::from(s)),
        _ => {
            let base = match (xdg.filter(|x| !x.is_empty()), home.filter(|h| !h.is_empty())) {
                (Some(xdg), _) => PathBuf::from(xdg),
                (None, Some(home)) => PathBuf::from(home).join(".cache"),
                (None, None) => return None,
            };
            Some(base.join("candlewick").join("plans"))
        }
    }
}

/// The folder for one library's plans on one device, named by `identity` (the library's version,
/// the GPU's name and compute capability) and this library's version (a key means what this build says it means);
/// None when the cache is off.
pub(crate) fn folder(identity: &str) -> Option<PathBuf> {
    let identity: String = identity.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    Some(root()?.join(format!("{identity}-candlewick{}", env!("CARGO_PKG_VERSION"))))
}

/// A stable name for a key's file (FNV-1a of its text; the file's first line settles collisions).
fn file_name(kind: &str, key: &str) -> String {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    format!("{kind}-{hash:016x}")
}

fn key_text(key: &impl Debug) -> String {
    format!("{key:?}").replace('\n', " ")
}

/// The stored plan for `key`, if this device's folder has one written for exactly that key.
pub(crate) fn read(folder: &Path, kind: &str, key: &impl Debug) -> Option<Vec<u8>> {
    let key = key_text(key);
    let bytes = std::fs::read(folder.join(file_name(kind, &key))).ok()?;
    parse(&bytes, &key).map(<[u8]>::to_vec)
}

fn parse<'a>(bytes: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let newline = bytes.iter().position(|&b| b == b'\n')?;
    (&bytes[..newline] == key.as_bytes()).then(|| &bytes[newline + 1..])
}

/// Stores `plan` for `key` (best effort: nothing is reported when the folder cannot be written).
pub(crate) fn write(folder: &Path, kind: &str, key: &impl Debug, plan: &[u8]) {
    let key = key_text(key);
    let _ = write_file(folder, &file_name(kind, &key), &key, plan);
}

fn write_file(folder: &Path, name: &str, key: &str, plan: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(folder)?;
    // A name of this write's own: other processes, and other pipeline threads of this one, may
    // be writing the same plan.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temporary = folder.join(format!(".{name}.{}-{n}.tmp", std::process::id()));
    let mut contents = Vec::with_capacity(key.len() + 1 + plan.len());
    contents.extend_from_slice(key.as_bytes());
    contents.push(b'\n');
    contents.extend_from_slice(plan);
    std::fs::write(&temporary, contents)?;
    std::fs::rename(&temporary, folder.join(name)).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_follows_the_setting_then_xdg_then_home() {
        let s = |v: &str| Some(std::ffi::OsString::from(v));
        assert_eq!(root_from(s("off"), s("/x"), s("/h")), None);
        assert_eq!(root_from(s("0"), None, s("/h")), None);
        assert_eq!(root_from(s("/plans"), s("/x"), s("/h")), Some(PathBuf::from("/plans")));
        assert_eq!(root_from(None, s("/x"), s("/h")), Some(PathBuf::from("/x/candlewick/plans")));
        assert_eq!(root_from(s(""), s(""), s("/h")), Some(PathBuf::from("/h/.cache/candlewick/plans")));
        assert_eq!(root_from(None, None, None), None);
    }

    #[test]
    fn what_is_written_is_read_back_by_key() {
        let folder = std::env::temp_dir().join(format!("candlewick-plan-cache-rw-{}", std::process::id()));
        write(&folder, "conv", &(1, [2, 3]), b"\x00json\n");
        assert_eq!(read(&folder, "conv", &(1, [2, 3])), Some(b"\x00json\n".to_vec()));
        assert_eq!(read(&folder, "conv", &(1, [2, 4])), None);
        assert_eq!(read(&folder, "sdpa", &(1, [2, 3])), None);
        std::fs::remove_dir_all(&folder).unwrap();
    }

    #[test]
    fn a_file_is_read_back_only_for_its_own_key() {
        let folder = std::env::temp_dir().join(format!("candlewick-plan-cache-test-{}", std::process::id()));
        let name = file_name("conv", "key a");
        assert_eq!(name, file_name("conv", "key a"));
        assert_ne!(name, file_name("conv", "key b"));
        assert_ne!(name, file_name("sdpa", "key a"));
        write_file(&folder, &name, "key a", b"plan\nbytes").unwrap();
        let bytes = std::fs::read(folder.join(&name)).unwrap();
        assert_eq!(parse(&bytes, "key a"), Some(&b"plan\nbytes"[..]));
        assert_eq!(parse(&bytes, "key b"), None);
        assert_eq!(parse(&bytes, "key"), None);
        assert_eq!(parse(b"no newline", "no newline"), None);
        // Nothing is left under a temporary name.
        let left: Vec<_> = std::fs::read_dir(&folder).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from(&name)]);
        std::fs::remove_dir_all(&folder).unwrap();
    }
}

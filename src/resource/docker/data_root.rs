//! What a stopped engine left in its data root, read from disk: the images and containers
//! each storage driver holds, for the driver-switch guard when the Engine API is not there.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

/// Images and containers of one storage driver.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub images: usize,
    pub containers: usize,
}

/// What each storage driver holds, by driver name.
pub type ByDriver = BTreeMap<String, Held>;

/// The name under which a container whose config names no driver is counted.
pub const UNKNOWN_DRIVER: &str = "(unknown driver)";

/// Entries of `dir`; an absent directory has none.
fn entries(dir: &Path) -> io::Result<Vec<std::fs::DirEntry>> {
    match std::fs::read_dir(dir) {
        Ok(d) => d.collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io::Error::new(e.kind(), format!("failed to read {}: {e}", dir.display()))),
    }
}

/// Per driver, what `root` holds: images are the entries of `image/<driver>/imagedb/content/sha256`
/// (the image store dockerd keeps per driver), containers are `containers/<id>/config.v2.json`,
/// each naming its driver. dockerd creates the empty directories of its driver on every start,
/// so an engine that never held anything counts nothing.
pub fn scan(root: &Path) -> io::Result<ByDriver> {
    let mut held = ByDriver::new();
    for driver in entries(&root.join("image"))? {
        let images = entries(&driver.path().join("imagedb/content/sha256"))?.len();
        if images > 0 {
            held.entry(driver.file_name().to_string_lossy().into_owned()).or_default().images = images;
        }
    }
    for container in entries(&root.join("containers"))? {
        let config = container.path().join("config.v2.json");
        let driver = crate::fsutil::read_text(&config)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v.get("Driver").and_then(|d| d.as_str()).map(str::to_string))
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| UNKNOWN_DRIVER.to_string());
        held.entry(driver).or_default().containers += 1;
    }
    Ok(held)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }

    #[test]
    fn counts_images_and_containers_per_driver() {
        let dir = tempfile::tempdir().expect("tmp");
        let r = dir.path();
        assert!(scan(&r.join("absent")).expect("absent is empty").is_empty());
        // What a fresh engine leaves: empty stores.
        std::fs::create_dir_all(r.join("image/overlay2/imagedb/content/sha256")).expect("mkdir");
        std::fs::create_dir_all(r.join("containers")).expect("mkdir");
        assert!(scan(r).expect("scan").is_empty());
        touch(r, "image/vfs/imagedb/content/sha256/f4a8", "{}");
        touch(r, "containers/0b03/config.v2.json", r#"{"Driver":"vfs","Image":"sha256:f4a8"}"#);
        touch(r, "containers/9c1d/config.v2.json", "garbled");
        let held = scan(r).expect("scan");
        assert_eq!(held.get("vfs"), Some(&Held { images: 1, containers: 1 }));
        assert_eq!(held.get(UNKNOWN_DRIVER), Some(&Held { images: 0, containers: 1 }));
        assert_eq!(held.get("overlay2"), None);
    }
}

//! A container's `linux.cgroupsPath` as the cgroupfs path emberd freezes
//! and limits through. With the cgroupfs driver it is one already
//! (`/k8s.io/<id>`); with the systemd driver (`SystemdCgroup = true`,
//! kubeadm's default) it is `slice:prefix:name`, which runc turns into a
//! transient scope `<prefix>-<name>.scope` in the slice's nesting, the
//! same path in every hierarchy. This is runc's expansion
//! (`libcontainer/cgroups/systemd`: `ExpandSlice`, `getUnitName`).

/// Why a cgroups path names no cgroup ember can find.
#[derive(Debug, thiserror::Error)]
pub enum CgroupPathError {
    #[error("cgroupsPath {0:?} is neither a cgroupfs path (/...) nor systemd's slice:prefix:name")]
    Unknown(String),
    #[error("cgroupsPath {path:?}: {slice:?} is not a systemd slice name (a-b-c.slice, no '/', no empty part)")]
    BadSlice { path: String, slice: String },
}

/// The cgroupfs path (relative to each hierarchy's root, with a leading
/// `/`) of a container whose config says `cgroups_path`.
pub fn cgroupfs_path(cgroups_path: &str) -> Result<String, CgroupPathError> {
    if cgroups_path.starts_with('/') {
        return Ok(cgroups_path.to_string());
    }
    let parts: Vec<&str> = cgroups_path.split(':').collect();
    let [slice, prefix, name] = parts[..] else {
        return Err(CgroupPathError::Unknown(cgroups_path.to_string()));
    };
    if name.is_empty() {
        return Err(CgroupPathError::Unknown(cgroups_path.to_string()));
    }
    // runc's default parent for the systemd driver.
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    let parent = expand_slice(slice).ok_or_else(|| CgroupPathError::BadSlice {
        path: cgroups_path.to_string(),
        slice: slice.to_string(),
    })?;
    let unit = if name.ends_with(".slice") {
        name.to_string()
    } else {
        format!("{prefix}-{name}.scope")
    };
    Ok(format!("{}/{unit}", parent.trim_end_matches('/')))
}

/// `a-b-c.slice` -> `/a.slice/a-b.slice/a-b-c.slice`; `-.slice` -> `/`.
fn expand_slice(slice: &str) -> Option<String> {
    let name = slice.strip_suffix(".slice")?;
    if slice.contains('/') {
        return None;
    }
    if name == "-" {
        return Some("/".to_string());
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for part in name.split('-') {
        if part.is_empty() {
            return None;
        }
        path.push_str(&format!("/{prefix}{part}.slice"));
        prefix.push_str(&format!("{part}-"));
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_paths_expand_as_runc_expands_them() {
        let id = "0123456789abcdef".repeat(4);
        for (given, want) in [
            ("/k8s.io/c1", "/k8s.io/c1".to_string()),
            (
                &format!("kubepods-besteffort-pod1a2b.slice:cri-containerd:{id}") as &str,
                format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1a2b.slice/cri-containerd-{id}.scope"),
            ),
            ("system.slice:docker:abc", "/system.slice/docker-abc.scope".to_string()),
            (":ctr:abc", "/system.slice/ctr-abc.scope".to_string()),
            ("-.slice:p:abc", "/p-abc.scope".to_string()),
            ("machine.slice:p:my.slice", "/machine.slice/my.slice".to_string()),
        ] {
            assert_eq!(cgroupfs_path(given).unwrap(), want, "{given}");
        }
        for bad in ["k8s.io/c1", "a:b", "a:b:c:d", "system.slice:p:", "x:p:c"] {
            assert!(cgroupfs_path(bad).is_err(), "{bad}");
        }
        for bad_slice in ["a--b.slice:p:c", "-a.slice:p:c", "a/b.slice:p:c"] {
            let e = cgroupfs_path(bad_slice).unwrap_err();
            assert!(
                matches!(e, CgroupPathError::BadSlice { .. }),
                "{bad_slice}: {e}"
            );
        }
    }
}

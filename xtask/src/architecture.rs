//! Not a task: the test that ARCHITECTURE.md's drawing is the workspace's
//! real dependency graph (each line `crate ──► dep, dep`, compared with the
//! `[dependencies]` of the manifests), so the drawing cannot drift.

#[cfg(test)]
mod tests {
    use crate::util::root;
    use std::collections::{BTreeMap, BTreeSet};

    type Graph = BTreeMap<String, BTreeSet<String>>;

    /// `sparsekit-punch` → `punch`, `sparsekit` stays `sparsekit`.
    fn short(package: &str) -> String {
        package
            .strip_prefix("sparsekit-")
            .unwrap_or(package)
            .to_owned()
    }

    /// The package name and its sparsekit dependencies (normal ones), read
    /// line by line: our manifests write each as `sparsekit-x.workspace`
    /// or `sparsekit-x = { … }`.
    fn manifest(text: &str) -> (String, BTreeSet<String>) {
        let (mut name, mut deps, mut section) = (String::new(), BTreeSet::new(), "");
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line;
            } else if section == "[package]" && line.starts_with("name") {
                name = line.split('"').nth(1).unwrap_or_default().to_owned();
            } else if section == "[dependencies]" && line.starts_with("sparsekit") {
                let dep = line.split(['.', ' ', '=']).next().unwrap_or_default();
                deps.insert(short(dep));
            }
        }
        (short(&name), deps)
    }

    fn manifests() -> Graph {
        let root = root();
        let mut dirs: Vec<_> = std::fs::read_dir(root.join("crates"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        dirs.extend([root.join("testbench"), root.join("xtask")]);
        dirs.iter()
            .filter_map(|d| std::fs::read_to_string(d.join("Cargo.toml")).ok())
            .map(|t| manifest(&t))
            .collect()
    }

    /// The first code block after "## Bird's-eye view": `crate ──► a, b`
    /// (a parenthesised remark ends the list), keeping only the names that
    /// are workspace crates.
    fn drawing(text: &str, crates: &BTreeSet<String>) -> Graph {
        let view = text.split("## Bird's-eye view").nth(1).expect("section");
        let block = view.split("```").nth(1).expect("drawing");
        let mut graph = Graph::new();
        for line in block.lines().filter(|l| l.contains('►')) {
            let (from, to) = line.split_once('►').unwrap();
            let from = from.trim_end_matches(['─', ' ']).trim().to_owned();
            let to = to.split('(').next().unwrap();
            let deps = to
                .split(',')
                .map(|d| d.trim().to_owned())
                .filter(|d| crates.contains(d))
                .collect();
            assert!(
                graph.insert(from.clone(), deps).is_none(),
                "{from} drawn twice"
            );
        }
        graph
    }

    #[test]
    fn the_drawing_matches_the_manifests() {
        let real = manifests();
        let crates: BTreeSet<String> = real.keys().cloned().collect();
        for c in [
            "sys",
            "extents",
            "punch",
            "copy",
            "cli",
            "testbench",
            "xtask",
        ] {
            assert!(crates.contains(c), "{c} not found among {crates:?}");
        }
        let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
        let drawn = drawing(&text, &crates);
        for (name, deps) in &real {
            assert_eq!(
                drawn.get(name),
                Some(deps),
                "ARCHITECTURE.md's drawing for {name} (left: drawn, right: Cargo.toml)"
            );
        }
        assert_eq!(drawn.len(), real.len(), "drawn crates that do not exist");
    }

    #[test]
    fn the_reader_sees_a_missing_edge() {
        let crates: BTreeSet<String> = ["punch", "extents", "sys"].map(String::from).into();
        let drawn = drawing(
            "## Bird's-eye view\n```\npunch ──► sys   (remark, extents)\n```\n",
            &crates,
        );
        assert_eq!(drawn["punch"], ["sys".to_owned()].into());
        let (name, deps) = manifest(
            "[package]\nname = \"sparsekit-punch\"\n[dependencies]\nsparsekit-sys.workspace = true\n\
             sparsekit-extents = { workspace = true }\n[dev-dependencies]\nsparsekit-cli.workspace = true\n",
        );
        assert_eq!(name, "punch");
        assert_eq!(deps, ["extents", "sys"].map(String::from).into());
        assert_ne!(Some(&deps), drawn.get("punch"));
    }
}

//! Every kernel the CUDA wing launches by a literal name is defined in the PTX module it names:
//! `launch!(dev, NORM, "group_norm_finalize", ...)` must find `group_norm_finalize` in
//! src/cuda/kernels/norm.cu. A wrong family compiles and only fails on a GPU (candle cannot find the
//! function in that module), so this checks the sources on any machine. Names built at run time
//! (`format!("bias_add_{sfx}")`) are checked by their prefix: some kernel of the family starts with it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// The `extern "C" __global__` kernels of each family (`norm.cu` -> "NORM"), with the names the
/// families' instantiation macros make (`FOO_##SUFFIX` instantiated for f16 and f32).
fn kernels_by_family(dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut families = BTreeMap::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("cu") {
            continue;
        }
        let family = path.file_stem().unwrap().to_str().unwrap().to_uppercase();
        let source = fs::read_to_string(&path).unwrap();
        let mut names = BTreeSet::new();
        for chunk in source.split("__global__").skip(1) {
            let Some(before_paren) = chunk.split('(').next() else { continue };
            let Some(name) = before_paren.split_whitespace().last() else { continue };
            match name.split_once("##") {
                // A macro's kernel, e.g. `bias_add_##SUFFIX`: f16 and f32 are instantiated.
                Some((prefix, _)) => {
                    names.insert(format!("{prefix}f16"));
                    names.insert(format!("{prefix}f32"));
                }
                None => {
                    names.insert(name.to_string());
                }
            }
        }
        families.insert(family, names);
    }
    families
}

/// (file, family, name, literal) for each `launch!(dev, FAMILY, name, ...)` in the wing's sources.
fn launches(dir: &Path) -> Vec<(String, String, String, bool)> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let source = fs::read_to_string(&path).unwrap();
        for call in source.split("launch!(").skip(1) {
            let args: Vec<&str> = call.splitn(4, ',').map(str::trim).collect();
            if args.len() < 3 {
                continue;
            }
            let (family, name) = (args[1].to_string(), args[2].to_string());
            let literal = name.starts_with('"');
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            found.push((file, family, name, literal));
        }
    }
    found
}

#[test]
fn every_launched_kernel_is_in_the_module_it_names() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cuda");
    let families = kernels_by_family(&root.join("kernels"));
    assert!(families.len() >= 4, "kernel families found: {:?}", families.keys());
    let calls = launches(&root.join("fused"));
    assert!(calls.len() >= 10, "launch! calls found: {calls:?}");
    let mut wrong = Vec::new();
    for (file, family, name, literal) in &calls {
        let Some(kernels) = families.get(family) else {
            wrong.push(format!("{file}: family {family} has no .cu file"));
            continue;
        };
        if *literal {
            let name = name.trim_matches('"');
            if !kernels.contains(name) {
                let home: Vec<_> = families.iter().filter(|(_, k)| k.contains(name)).map(|(f, _)| f.as_str()).collect();
                wrong.push(format!("{file}: {name} launched from {family}, defined in {home:?}"));
            }
        } else if let Some(prefix) = name.split("format!(\"").nth(1).and_then(|s| s.split('{').next()) {
            if !kernels.iter().any(|k| k.starts_with(prefix)) {
                wrong.push(format!("{file}: no {family} kernel starts with {prefix}"));
            }
        }
    }
    assert!(wrong.is_empty(), "kernels launched from the wrong module:\n{}", wrong.join("\n"));
}

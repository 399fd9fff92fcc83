//! Rules the tree keeps, checked as tests: exercises.toml agrees with the exercise markers,
//! names real checks, and its mistakes apply; the book includes code by anchors that exist;
//! xtask's modules have no import cycle.

use std::fs;

use xtask::project_root;

use crate::chapters;
use crate::exercises::{load, reference_bodies, region_ids};

#[test]
fn every_exercise_has_a_marker_a_hint_and_a_real_check() {
    for chapter in chapters::all().unwrap() {
        let exercises = load(&chapter).unwrap();
        let toml_ids: Vec<&str> = exercises.iter().map(|e| e.id.as_str()).collect();
        let mut marker_ids = region_ids(&chapter).unwrap();
        marker_ids
            .sort_by_key(|id| id.split('.').map(|n| n.parse::<u32>().unwrap()).collect::<Vec<_>>());
        assert_eq!(toml_ids, marker_ids, "chapter {}: exercises.toml vs markers", chapter.number);
        let tests_file = project_root().join("tests").join(format!("{}.rs", chapter.test_name));
        let tests = fs::read_to_string(&tests_file).unwrap();
        for exercise in &exercises {
            assert!(exercise.id.starts_with(&format!("{}.", chapter.number)), "{}", exercise.id);
            assert!(
                !exercise.title.is_empty() && !exercise.hint.trim().is_empty(),
                "{}",
                exercise.id
            );
            assert!(!exercise.checks.is_empty(), "exercise {} has no check", exercise.id);
            for check in &exercise.checks {
                assert!(
                    tests.contains(&format!("fn {check}()")),
                    "exercise {}: no check {check}",
                    exercise.id
                );
            }
        }
    }
}

#[test]
fn every_mistake_applies_to_its_region_and_changes_it() {
    for chapter in chapters::all().unwrap() {
        let bodies = reference_bodies(&chapter).unwrap();
        for exercise in load(&chapter).unwrap() {
            for mistake in &exercise.mistakes {
                let reference = &bodies[&exercise.id];
                if let Err(err) = mistake.apply(reference) {
                    panic!("exercise {}: {err:#}", exercise.id);
                }
                assert!(
                    !mistake.what.trim().is_empty(),
                    "exercise {}: a mistake without `what`",
                    exercise.id
                );
            }
        }
    }
}

#[test]
fn every_uncatchable_mistake_is_named_on_its_chapters_page() {
    for chapter in chapters::all().unwrap() {
        let prefix = format!("ch{:02}-", chapter.number);
        let page = fs::read_dir(project_root().join("book/src"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .find(|path| path.file_name().unwrap().to_string_lossy().starts_with(&prefix));
        for exercise in load(&chapter).unwrap() {
            for mistake in exercise.mistakes.iter().filter(|m| m.uncatchable.is_some()) {
                let page = page.as_ref().expect("a chapter with exercises has a page");
                let text = fs::read_to_string(page).unwrap();
                assert!(
                    text.contains(&mistake.what),
                    "exercise {}: no check catches the mistake \"{}\" here, so {} must say so \
                     (quote its `what`)",
                    exercise.id,
                    mistake.what,
                    page.display()
                );
            }
        }
    }
}

#[test]
fn the_book_includes_code_by_existing_anchors_only() {
    let pages = project_root().join("book/src");
    for entry in fs::read_dir(&pages).unwrap() {
        let page = entry.unwrap().path();
        let text = fs::read_to_string(&page).unwrap();
        if let Err(err) = xtask::includes::check_includes(&pages, &text) {
            panic!("{}:\n{err}", page.display());
        }
    }
}

/// xtask's modules in layers: each `use crate::…` (and `xtask::…`, the library's modules)
/// points down, so no module depends on one that depends on it.
#[test]
fn xtask_has_no_import_cycle() {
    let src = project_root().join("xtask/src");
    let mut uses = std::collections::BTreeMap::new();
    for entry in fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let (module, text) = if path.is_dir() {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let files = fs::read_dir(&path).unwrap().map(|file| file.unwrap().path());
            let rust = files.filter(|file| file.extension().is_some_and(|ext| ext == "rs"));
            (name, rust.map(|file| fs::read_to_string(file).unwrap()).collect::<String>())
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            (name, fs::read_to_string(&path).unwrap())
        } else {
            continue;
        };
        let used: Vec<String> = ["crate::", "xtask::"]
            .iter()
            .flat_map(|prefix| text.split(prefix).skip(1))
            .map(|rest| rest.split(|c: char| !c.is_alphanumeric() && c != '_').next().unwrap())
            .filter(|used| *used != module)
            .map(String::from)
            .collect();
        uses.insert(module, used);
    }
    fn reaches(
        uses: &std::collections::BTreeMap<String, Vec<String>>,
        from: &str,
        to: &str,
        seen: &mut Vec<String>,
    ) -> bool {
        let next = uses.get(from).map(Vec::as_slice).unwrap_or_default();
        next.iter().any(|module| {
            module == to
                || (!seen.contains(module) && {
                    seen.push(module.clone());
                    reaches(uses, module, to, seen)
                })
        })
    }
    for module in uses.keys() {
        assert!(
            !reaches(&uses, module, module, &mut Vec::new()),
            "xtask/src/{module} depends on itself through {:?}",
            uses[module]
        );
    }
}

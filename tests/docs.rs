//! The documentation stays true to the binary and to itself: every long
//! flag `host run`, `host serve` and `host bundle` print in `--help` is documented in
//! docs/configuration.md, and every flag its tables name is one some
//! subcommand prints (a renamed or removed flag fails here); README.md
//! links every page of docs/ and bench/README.md and stays short; and every
//! relative link of these pages leads to a file that exists.

use crate::support::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The longest README.md may grow: the reference belongs in docs/.
const README_MAX_LINES: usize = 230;

/// Every subcommand, for the flags the binary knows (`[]`: the top level).
const SUBCOMMANDS: [&[&str]; 7] = [&[], &["run"], &["serve"], &["compile"], &["bundle"], &["inspect"], &["wit"]];

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// What `host ARGS... --help` prints.
fn help(args: &[&str]) -> String {
    let mut args = args.to_vec();
    args.push("--help");
    let out = run_host(&args);
    assert!(out.status.success(), "host {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Whether `c` may be part of a long flag's name.
fn flag_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'
}

/// The long flags (`--name`) `text` names: `--` after a non-word character,
/// a lowercase letter, then letters, digits and dashes.
fn long_flags(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut flags = BTreeSet::new();
    let mut i = 0;
    while let Some(found) = text[i..].find("--") {
        let start = i + found;
        i = start + 2;
        let after_word = start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'-');
        if after_word || !bytes.get(i).is_some_and(|c| c.is_ascii_lowercase()) {
            continue;
        }
        let mut end = i;
        while end < bytes.len() && flag_char(bytes[end]) {
            end += 1;
        }
        flags.insert(text[start..end].trim_end_matches('-').to_string());
        i = end;
    }
    flags
}

/// Whether `text` names `flag` whole: `--kv` in `--kv memory`, not in
/// `--kv-max-bytes`.
fn names_flag(text: &str, flag: &str) -> bool {
    text.match_indices(flag).any(|(at, _)| !text.as_bytes().get(at + flag.len()).is_some_and(|&c| flag_char(c)))
}

/// The rows of the markdown tables in `text`.
fn table_rows(text: &str) -> String {
    text.lines().filter(|line| line.trim_start().starts_with('|')).collect::<Vec<_>>().join("\n")
}

/// `text` without its fenced code blocks, whose brackets are not links.
fn prose(text: &str) -> String {
    let mut fenced = false;
    let mut kept = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            kept.push(line);
        }
    }
    kept.join("\n")
}

/// The targets of the markdown links (`[text](target)`, images too) of
/// `text`, without a title.
fn link_targets(text: &str) -> Vec<String> {
    let text = prose(text);
    let mut targets = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = rest[..end].split_whitespace().next().unwrap_or("");
        targets.push(target.to_string());
        rest = &rest[end..];
    }
    targets
}

/// A link's target as a path relative to the page, or `None` for a link
/// elsewhere (a URL, an anchor of the same page).
fn relative_path(target: &str) -> Option<&str> {
    let external = target.contains("://") || target.starts_with("mailto:") || target.starts_with('#');
    let path = target.split('#').next().unwrap();
    (!external && !path.is_empty()).then_some(path)
}

/// README.md, the pages of docs/ and bench/README.md.
fn pages() -> Vec<PathBuf> {
    let repo = repo_root();
    let mut pages = vec![repo.join("README.md"), repo.join("bench/README.md")];
    pages.extend(docs_pages());
    pages
}

/// The pages of docs/, sorted.
fn docs_pages() -> Vec<PathBuf> {
    let dir = repo_root().join("docs");
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    pages.sort();
    assert!(!pages.is_empty(), "no pages in {}", dir.display());
    pages
}

#[test]
fn every_flag_of_run_serve_and_bundle_is_in_the_configuration_page() {
    let page = read(&repo_root().join("docs/configuration.md"));
    let mut missing = Vec::new();
    for subcommand in ["run", "serve", "bundle"] {
        let flags = long_flags(&help(&[subcommand]));
        let few = if subcommand == "bundle" { 1 } else { 3 };
        assert!(
            flags.contains("--help") && flags.len() > few,
            "host {subcommand} --help names too few flags: {flags:?}"
        );
        for flag in flags {
            if !names_flag(&page, &flag) {
                missing.push(format!("host {subcommand} {flag}"));
            }
        }
    }
    assert!(missing.is_empty(), "flags that docs/configuration.md does not mention: {missing:?}");
}

#[test]
fn every_flag_in_the_configuration_tables_is_one_the_binary_has() {
    let known: BTreeSet<String> = SUBCOMMANDS.iter().flat_map(|args| long_flags(&help(args))).collect();
    let page = read(&repo_root().join("docs/configuration.md"));
    let documented = long_flags(&table_rows(&page));
    assert!(documented.len() > 30, "the flag tables of docs/configuration.md name few flags: {documented:?}");
    let unknown: Vec<&String> = documented.iter().filter(|flag| !known.contains(*flag)).collect();
    assert!(
        unknown.is_empty(),
        "docs/configuration.md documents flags that no subcommand's --help prints: {unknown:?} (known: {known:?})"
    );
}

#[test]
fn the_readme_links_every_page_and_stays_short() {
    let repo = repo_root();
    let readme = read(&repo.join("README.md"));
    let lines = readme.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines; at most {README_MAX_LINES}: move reference to docs/"
    );
    let linked: BTreeSet<PathBuf> = link_targets(&readme)
        .iter()
        .filter_map(|target| relative_path(target))
        .filter_map(|path| repo.join(path).canonicalize().ok())
        .collect();
    let mut wanted = docs_pages();
    wanted.push(repo.join("bench/README.md"));
    let unlinked: Vec<String> = wanted
        .iter()
        .filter(|page| !linked.contains(&page.canonicalize().unwrap()))
        .map(|page| page.strip_prefix(&repo).unwrap().display().to_string())
        .collect();
    assert!(unlinked.is_empty(), "pages README.md does not link: {unlinked:?}");
}

#[test]
fn every_relative_link_leads_to_a_file() {
    let repo = repo_root();
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let dir = page.parent().unwrap();
        for target in link_targets(&read(&page)) {
            let Some(path) = relative_path(&target) else { continue };
            checked += 1;
            if !dir.join(path).exists() {
                broken.push(format!("{}: {target}", page.strip_prefix(&repo).unwrap().display()));
            }
        }
    }
    assert!(checked > 20, "only {checked} relative links found: is the link parser broken?");
    assert!(broken.is_empty(), "links to files that do not exist: {broken:?}");
}

#[test]
fn the_parsers_find_what_they_should() {
    let flags = long_flags("Use --kv memory, --kv-max-bytes 1MiB; a--b and -- ARGS are not flags (--watch).");
    assert_eq!(flags.into_iter().collect::<Vec<_>>(), ["--kv", "--kv-max-bytes", "--watch"]);
    assert!(names_flag("`--kv memory`", "--kv"));
    assert!(!names_flag("`--kv-max-bytes`", "--kv"));
    let text = "[a](docs/a.md#x) ![b](b.svg \"t\") [c](https://x.org/)\n```\nlet v = [1](2);\n```\n[d](#here)";
    assert_eq!(link_targets(text), ["docs/a.md#x", "b.svg", "https://x.org/", "#here"]);
    let relative: Vec<_> = link_targets(text).iter().filter_map(|t| relative_path(t).map(str::to_string)).collect();
    assert_eq!(relative, ["docs/a.md", "b.svg"]);
}

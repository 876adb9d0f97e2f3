//! The README's configuration examples work when pasted.

use otlp_collector::config::Config;

fn yaml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```yaml") => current = Some(String::new()),
            (Some(_), "```") => blocks.push(current.take().expect("open block")),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

#[test]
fn every_yaml_example_in_the_readme_is_a_valid_config() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let blocks = yaml_blocks(&readme);
    assert!(blocks.len() >= 3, "found {} yaml blocks", blocks.len());
    for block in &blocks {
        if let Err(e) = Config::from_yaml(block) {
            panic!("README example does not validate:\n{block}\n{e}");
        }
    }
}

#[test]
fn the_readme_shows_the_real_default_config() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let shown = yaml_blocks(&readme).into_iter().find(|b| b.contains("max_concurrent_streams")).expect("the default config block");
    let mut shown = Config::from_yaml(&shown).unwrap();
    // The block comments out max_connection_age (off by default); everything else must match.
    shown.receivers.otlp.grpc.as_mut().unwrap().max_connection_age = None;
    assert_eq!(shown, Config::default());
}

//! docs/API.md is the reference rendered from the OpenAPI document: this test fails when it is stale.
//! Regenerate it with `octoisp-controlplane openapi --markdown > docs/API.md` (or run this test with
//! `OCTOISP_BLESS=1`).

use std::path::PathBuf;

#[test]
fn docs_api_md_is_the_rendered_openapi_document() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/API.md");
    let rendered = octoisp_controlplane::api::reference_markdown();
    if std::env::var_os("OCTOISP_BLESS").is_some() {
        std::fs::write(&path, &rendered).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != rendered {
        let line = committed
            .lines()
            .zip(rendered.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(rendered.lines().count()));
        panic!(
            "docs/API.md is stale (first difference at line {}): run \
             `octoisp-controlplane openapi --markdown > docs/API.md`",
            line + 1
        );
    }
    // What a reader looks for is there: a route with its permission, parameters and a linked schema.
    assert!(rendered.contains("### `GET /api/v1/devices/{id}`"));
    assert!(rendered.contains("**Permission**: `devices:read`"));
    assert!(rendered.contains("](#schema-"));
}

#[test]
fn every_route_of_the_table_is_in_the_reference_with_its_permission() {
    let rendered = octoisp_controlplane::api::reference_markdown();
    for route in octoisp_controlplane::api::ROUTES {
        let heading = format!("### `{} {}`", route.method, route.path);
        let at = rendered
            .find(&heading)
            .unwrap_or_else(|| panic!("{heading} missing from the reference"));
        if !route.permission.is_empty() {
            let section = &rendered[at..];
            let end = section[heading.len()..]
                .find("\n### ")
                .map_or(section.len(), |e| e + heading.len());
            assert!(
                section[..end].contains(&format!("**Permission**: `{}`", route.permission)),
                "{heading}: permission {} not stated",
                route.permission
            );
        }
    }
}

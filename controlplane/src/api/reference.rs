//! docs/API.md: the API reference in Markdown, rendered from the OpenAPI document ([`super::openapi`]) and the
//! route table ([`super::ROUTES`], for the permission of each route).
//!
//! `octoisp-controlplane openapi --markdown > docs/API.md` writes it; the `openapi_doc` test fails when the
//! committed file differs from what the code renders, so the reference cannot drift from the API.
//!
//! The renderer walks the document as JSON (OpenAPI 3.1), so it reads what clients read. Operations are grouped
//! by their first tag; schemas are listed once at the end and linked from the operations.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::Value;

use super::RouteSpec;

const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];

/// The reference of `doc` (an OpenAPI document as JSON), with the permissions of `routes`.
pub fn markdown(doc: &Value, routes: &[RouteSpec]) -> String {
    let mut out = String::new();
    let title = doc["info"]["title"].as_str().unwrap_or("API");
    let version = doc["info"]["version"].as_str().unwrap_or("");
    let _ = write!(
        out,
        "# {title} reference (v{version})\n\n\
         <!-- Generated from the OpenAPI document by `octoisp-controlplane openapi --markdown > docs/API.md`.\n     \
         Do not edit by hand: the `openapi_doc` test fails when this file is stale. -->\n\n\
         Every route is under `/api/v1` of an instance with the `api` role; the machine-readable document is served \
         at `GET /api/v1/openapi.json`.\n\n\
         - **Authentication**: `Authorization: Bearer <access token>` (from `POST /api/v1/auth/login`) or \
         `X-API-Key: <key>`. A Global Admin acts within one provider with `X-OctoISP-Provider: <provider id>`.\n\
         - **Permission**: each route checks the permission named below; a caller without it gets 403, and another \
         provider's object answers 404.\n\
         - **Errors**: every error is JSON, `{{\"error\": {{\"code\", \"message\", \"request_id\"}}}}` \
         ([ErrorBody](#schema-errorbody)); 413 above `api.max_body_bytes`, 429 with `Retry-After` over a rate limit.\n\
         - **Request id**: `X-Request-Id` is echoed (or made) on every response and logged with the request.\n\
         - **Lists** are keyset-paginated: pass the `next_cursor` of a page as `cursor` to get the next one.\n\n"
    );

    // Operations per tag, in path order.
    let mut by_tag: BTreeMap<String, Vec<(String, String, &Value)>> = BTreeMap::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            for method in METHODS {
                if let Some(op) = item.get(*method).filter(|op| op.is_object()) {
                    let tag = op["tags"][0].as_str().unwrap_or("other").to_owned();
                    by_tag
                        .entry(tag)
                        .or_default()
                        .push((method.to_uppercase(), path.clone(), op));
                }
            }
        }
    }
    out.push_str("## Contents\n\n");
    for (tag, ops) in &by_tag {
        let _ = writeln!(
            out,
            "- [{tag}](#tag-{}) ({} routes)",
            anchor(tag),
            ops.len()
        );
    }
    out.push_str("- [Schemas](#schemas)\n\n");

    for (tag, ops) in &by_tag {
        let _ = writeln!(out, "<a id=\"tag-{}\"></a>\n\n## {tag}\n", anchor(tag));
        for (method, path, op) in ops {
            operation(&mut out, method, path, op, routes);
        }
    }

    out.push_str("## Schemas\n\n");
    if let Some(schemas) = doc["components"]["schemas"].as_object() {
        for (name, schema) in schemas {
            schema_section(&mut out, name, schema);
        }
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

fn operation(out: &mut String, method: &str, path: &str, op: &Value, routes: &[RouteSpec]) {
    let _ = writeln!(out, "### `{method} {path}`\n");
    let summary = op["summary"].as_str().unwrap_or("");
    let description = op["description"].as_str().unwrap_or("");
    if !summary.is_empty() {
        let _ = writeln!(out, "{}\n", summary.trim());
    }
    if !description.is_empty() && description.trim() != summary.trim() {
        let _ = writeln!(out, "{}\n", description.trim());
    }
    let permission = routes
        .iter()
        .find(|r| r.method == method && r.path == path)
        .map(|r| r.permission);
    let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
    let line = match permission {
        Some(p) if !p.is_empty() => format!("`{p}`"),
        _ if secured => "none beyond a signed-in caller".to_owned(),
        _ => "none (public)".to_owned(),
    };
    let _ = writeln!(out, "**Permission**: {line}\n");

    if let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
        out.push_str("**Parameters**\n\n| name | in | type | required | description |\n| --- | --- | --- | --- | --- |\n");
        for p in params {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} |",
                p["name"].as_str().unwrap_or("?"),
                p["in"].as_str().unwrap_or("?"),
                type_of(&p["schema"]),
                if p["required"].as_bool().unwrap_or(false) {
                    "yes"
                } else {
                    "no"
                },
                cell(p["description"].as_str().unwrap_or("")),
            );
        }
        out.push('\n');
    }
    if let Some(body) = op["requestBody"].as_object() {
        let required = body
            .get("required")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let _ = writeln!(
            out,
            "**Request body**{}: {}\n",
            if required { "" } else { " (optional)" },
            content(body.get("content").unwrap_or(&Value::Null))
        );
    }
    if let Some(responses) = op["responses"].as_object() {
        out.push_str("**Responses**\n\n| status | description | body |\n| --- | --- | --- |\n");
        for (status, r) in responses {
            let _ = writeln!(
                out,
                "| {status} | {} | {} |",
                cell(r["description"].as_str().unwrap_or("")),
                content(&r["content"]),
            );
        }
        out.push('\n');
    }
}

/// `type` of each content type of a body, such as `application/json`: [Device](#schema-device).
fn content(content: &Value) -> String {
    let Some(map) = content.as_object().filter(|m| !m.is_empty()) else {
        return "—".to_owned();
    };
    map.iter()
        .map(|(ctype, media)| {
            let schema = &media["schema"];
            if schema.is_null() {
                format!("`{ctype}`")
            } else {
                format!("`{ctype}` {}", type_of(schema))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn schema_section(out: &mut String, name: &str, schema: &Value) {
    let _ = writeln!(
        out,
        "<a id=\"schema-{}\"></a>\n\n### {name}\n",
        anchor(name)
    );
    if let Some(d) = schema["description"].as_str() {
        let _ = writeln!(out, "{}\n", d.trim());
    }
    let Some(props) = schema["properties"].as_object() else {
        let _ = writeln!(out, "Type: {}\n", type_of(schema));
        return;
    };
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    out.push_str("| field | type | required | description |\n| --- | --- | --- | --- |\n");
    for (field, p) in props {
        let _ = writeln!(
            out,
            "| `{field}` | {} | {} | {} |",
            type_of(p),
            if required.contains(&field.as_str()) {
                "yes"
            } else {
                "no"
            },
            cell(p["description"].as_str().unwrap_or("")),
        );
    }
    out.push('\n');
}

/// A short type: `string (uuid)`, `array of [Device](#schema-device)`, `"a" | "b"`, `integer or null`.
fn type_of(s: &Value) -> String {
    if let Some(r) = s["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap_or(r);
        return format!("[{name}](#schema-{})", anchor(name));
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(alts) = s[key].as_array() {
            let sep = if key == "allOf" { " and " } else { " or " };
            return alts.iter().map(type_of).collect::<Vec<_>>().join(sep);
        }
    }
    if let Some(values) = s["enum"].as_array() {
        return values
            .iter()
            .map(|v| match v {
                Value::String(t) => format!("`\"{t}\"`"),
                other => format!("`{other}`"),
            })
            .collect::<Vec<_>>()
            .join(" \\| ");
    }
    let types: Vec<String> = match &s["type"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => return "any".to_owned(),
    };
    types
        .iter()
        .map(|t| match t.as_str() {
            "array" => format!("array of {}", type_of(&s["items"])),
            "null" => "null".to_owned(),
            "object" if s["additionalProperties"].is_object() => {
                format!("map of {}", type_of(&s["additionalProperties"]))
            }
            other => match s["format"].as_str() {
                Some(f) => format!("{other} ({f})"),
                None => other.to_owned(),
            },
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Text for a table cell: one line, no pipes.
fn cell(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// The anchor of a name: lower case, letters, digits and dashes.
fn anchor(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn types_render_short_and_link_schemas() {
        assert_eq!(
            type_of(&json!({"$ref": "#/components/schemas/Device"})),
            "[Device](#schema-device)"
        );
        assert_eq!(
            type_of(&json!({"type": ["string", "null"], "format": "uuid"})),
            "string (uuid) or null"
        );
        assert_eq!(
            type_of(&json!({"type": "array", "items": {"type": "integer"}})),
            "array of integer"
        );
        assert_eq!(type_of(&json!({"enum": ["a", "b"]})), "`\"a\"` \\| `\"b\"`");
        assert_eq!(cell("two\n lines | pipe"), "two lines \\| pipe");
    }

    #[test]
    fn operations_are_grouped_by_tag_with_their_permission() {
        let doc = json!({
            "info": {"title": "T", "version": "1"},
            "paths": {"/api/v1/things/{id}": {"get": {
                "tags": ["things"], "summary": "One thing.",
                "security": [{"bearer": []}],
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "The thing",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}}}
            }}},
            "components": {"schemas": {"Thing": {"type": "object", "required": ["id"],
                "properties": {"id": {"type": "string", "description": "Its id."}}}}}
        });
        let routes = [RouteSpec {
            method: "GET",
            path: "/api/v1/things/{id}",
            permission: "things:read",
        }];
        let md = markdown(&doc, &routes);
        assert!(md.contains("## things"), "{md}");
        assert!(md.contains("### `GET /api/v1/things/{id}`"), "{md}");
        assert!(md.contains("**Permission**: `things:read`"), "{md}");
        assert!(md.contains("| `id` | path | string | yes |"), "{md}");
        assert!(
            md.contains("| 200 | The thing | `application/json` [Thing](#schema-thing) |"),
            "{md}"
        );
        assert!(md.contains("| `id` | string | yes | Its id. |"), "{md}");
    }
}

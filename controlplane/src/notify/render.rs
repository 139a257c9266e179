//! Message texts, per recipient language, from an alert event's language-neutral facts. Pure: no I/O.
//!
//! pt-BR is the default language; numbers are localized (`1.234,5` in pt-BR, `1,234.5` in English).

use serde_json::Value;

/// A language notifications are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Language {
    /// Brazilian Portuguese (the default).
    #[default]
    PtBr,
    /// English.
    En,
}

impl Language {
    /// Parses the stored code (`pt-BR`, `en`); anything else is pt-BR.
    pub fn from_code(code: &str) -> Language {
        match code {
            "en" => Language::En,
            _ => Language::PtBr,
        }
    }

    /// The stored code.
    pub fn code(self) -> &'static str {
        match self {
            Language::PtBr => "pt-BR",
            Language::En => "en",
        }
    }

    /// Whether `code` is a language notifications can be written in.
    pub fn is_valid_code(code: &str) -> bool {
        matches!(code, "pt-BR" | "en")
    }
}

/// What a message is about: the lead event of its group.
#[derive(Debug, Clone)]
pub struct EventText<'a> {
    /// `firing`, `resolved`, `flapping`, `flap_ended` or `acknowledged`.
    pub kind: &'a str,
    /// `info`, `warning` or `critical`.
    pub severity: &'a str,
    /// Name of the alert rule.
    pub rule_name: &'a str,
    /// Human label of the target.
    pub target: &'a str,
    /// Language-neutral facts (metric, value, threshold, operator, unit, for_secs, occurrences, ...).
    pub facts: &'a Value,
    /// Other alerts folded into this message (same group).
    pub dependents: u64,
}

/// A rendered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Subject (mail subject, push title, first line elsewhere).
    pub subject: String,
    /// Body text.
    pub body: String,
}

/// Formats `v` with up to two decimals (trailing zeros dropped) and thousands separators of `lang`.
pub fn number(v: f64, lang: Language) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let (thousands, decimal) = match lang {
        Language::PtBr => ('.', ','),
        Language::En => (',', '.'),
    };
    let fixed = format!("{:.2}", v.abs());
    let (int, frac) = fixed.split_once('.').unwrap_or((&fixed, ""));
    let frac = frac.trim_end_matches('0');
    let mut grouped = String::with_capacity(int.len() + int.len() / 3 + 4);
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(thousands);
        }
        grouped.push(c);
    }
    let negative = v < 0.0 && (int != "0" || !frac.is_empty());
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    out.push_str(&grouped);
    if !frac.is_empty() {
        out.push(decimal);
        out.push_str(frac);
    }
    out
}

fn severity_label(severity: &str, lang: Language) -> &'static str {
    match (severity, lang) {
        ("critical", Language::PtBr) => "CRÍTICO",
        ("critical", Language::En) => "CRITICAL",
        ("warning", Language::PtBr) => "AVISO",
        ("warning", Language::En) => "WARNING",
        (_, Language::PtBr) => "INFORMAÇÃO",
        (_, Language::En) => "INFO",
    }
}

fn kind_label(kind: &str, lang: Language) -> &'static str {
    match (kind, lang) {
        ("resolved", Language::PtBr) => "RESOLVIDO",
        ("resolved", Language::En) => "RESOLVED",
        ("flapping", Language::PtBr) => "OSCILANDO",
        ("flapping", Language::En) => "FLAPPING",
        ("flap_ended", Language::PtBr) => "ESTÁVEL",
        ("flap_ended", Language::En) => "STABLE",
        ("acknowledged", Language::PtBr) => "RECONHECIDO",
        ("acknowledged", Language::En) => "ACKNOWLEDGED",
        _ => "",
    }
}

fn fact_number(facts: &Value, key: &str) -> Option<f64> {
    match facts.get(key)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn fact_text<'a>(facts: &'a Value, key: &str) -> Option<&'a str> {
    facts
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// `metric = 1.234,5 Mbit/s (limite > 1.000)` in the recipient's language, when the facts carry a value.
fn measurement(facts: &Value, lang: Language) -> Option<String> {
    let value = fact_number(facts, "value")?;
    let unit = fact_text(facts, "unit")
        .map(|u| format!(" {u}"))
        .unwrap_or_default();
    let metric = fact_text(facts, "metric").unwrap_or(match lang {
        Language::PtBr => "valor",
        Language::En => "value",
    });
    let mut s = format!("{metric} = {}{unit}", number(value, lang));
    if let Some(threshold) = fact_number(facts, "threshold") {
        let op = fact_text(facts, "operator").unwrap_or("");
        let word = match lang {
            Language::PtBr => "limite",
            Language::En => "threshold",
        };
        s.push_str(&format!(" ({word} {op} {}{unit})", number(threshold, lang)).replace("  ", " "));
    }
    Some(s)
}

/// Renders `event` in `lang`.
pub fn render(event: &EventText<'_>, lang: Language) -> Rendered {
    let EventText {
        kind,
        severity,
        rule_name,
        target,
        facts,
        dependents,
    } = event;
    let label = match kind_label(kind, lang) {
        "" => severity_label(severity, lang),
        other => other,
    };
    let more = match (*dependents, lang) {
        (0, _) => String::new(),
        (1, Language::PtBr) => " (+1 alerta dependente)".to_owned(),
        (1, Language::En) => " (+1 dependent alert)".to_owned(),
        (n, Language::PtBr) => format!(" (+{} alertas dependentes)", number(n as f64, lang)),
        (n, Language::En) => format!(" (+{} dependent alerts)", number(n as f64, lang)),
    };
    let subject = format!("[{label}] {target}: {rule_name}{more}");
    let mut body = match (*kind, lang) {
        ("resolved", Language::PtBr) => format!("Alerta resolvido: {rule_name} em {target}."),
        ("resolved", Language::En) => format!("Alert resolved: {rule_name} on {target}."),
        ("flapping", Language::PtBr) => {
            format!("O alerta {rule_name} em {target} está oscilando.")
        }
        ("flapping", Language::En) => format!("Alert {rule_name} on {target} is flapping."),
        ("flap_ended", Language::PtBr) => {
            format!("O alerta {rule_name} em {target} parou de oscilar.")
        }
        ("flap_ended", Language::En) => {
            format!("Alert {rule_name} on {target} stopped flapping.")
        }
        ("acknowledged", Language::PtBr) => {
            format!("Alerta reconhecido: {rule_name} em {target}.")
        }
        ("acknowledged", Language::En) => {
            format!("Alert acknowledged: {rule_name} on {target}.")
        }
        (_, Language::PtBr) => format!(
            "Alerta disparado ({}): {rule_name} em {target}.",
            severity_label(severity, lang)
        ),
        (_, Language::En) => format!(
            "Alert firing ({}): {rule_name} on {target}.",
            severity_label(severity, lang)
        ),
    };
    match (*kind, fact_text(facts, "state"), lang) {
        ("flap_ended", Some("firing"), Language::PtBr) => body.push_str(" Continua disparado."),
        ("flap_ended", Some("firing"), Language::En) => body.push_str(" It is still firing."),
        ("flap_ended", Some("resolved"), Language::PtBr) => body.push_str(" Está normal agora."),
        ("flap_ended", Some("resolved"), Language::En) => body.push_str(" It is back to normal."),
        _ => {}
    }
    if facts.get("settled") == Some(&Value::Bool(true)) {
        body.push_str(match lang {
            Language::PtBr => " Estado estável após oscilações.",
            Language::En => " Steady after changing state several times.",
        });
    }
    if let Some(m) = measurement(facts, lang) {
        body.push(' ');
        body.push_str(&m);
        body.push('.');
    }
    if let Some(secs) = fact_number(facts, "for_secs").filter(|s| *s > 0.0) {
        body.push_str(&match lang {
            Language::PtBr => format!(" Há {} s.", number(secs, lang)),
            Language::En => format!(" For {} s.", number(secs, lang)),
        });
    }
    if let Some(n) = fact_number(facts, "occurrences").filter(|n| *n > 0.0) {
        body.push_str(&match lang {
            Language::PtBr => format!(" Mudanças de estado: {}.", number(n, lang)),
            Language::En => format!(" State changes: {}.", number(n, lang)),
        });
    }
    if let Some(by) = fact_text(facts, "acknowledged_by") {
        body.push_str(&match lang {
            Language::PtBr => format!(" Por {by}."),
            Language::En => format!(" By {by}."),
        });
    }
    if *dependents > 0 {
        body.push_str(&match lang {
            Language::PtBr => format!(
                " Mais {} alertas do mesmo grupo foram agrupados nesta mensagem.",
                number(*dependents as f64, lang)
            ),
            Language::En => format!(
                " {} more alerts of the same group are folded into this message.",
                number(*dependents as f64, lang)
            ),
        });
    }
    Rendered { subject, body }
}

/// The summary of the `count` messages a channel's rate limit folded, listing the first few distinct `subjects`.
pub fn summary(count: usize, subjects: &[String], lang: Language) -> Rendered {
    let n = number(count as f64, lang);
    let subject = match lang {
        Language::PtBr => format!("[RESUMO] {n} notificações agrupadas (limite de envio do canal)"),
        Language::En => format!("[SUMMARY] {n} notifications folded (channel rate limit)"),
    };
    let mut body = match lang {
        Language::PtBr => format!(
            "O limite de mensagens por minuto deste canal foi atingido; {n} notificações foram resumidas:"
        ),
        Language::En => format!(
            "This channel's messages-per-minute limit was reached; {n} notifications are summarized:"
        ),
    };
    for s in subjects.iter().take(10) {
        body.push_str("\n- ");
        body.push_str(s);
    }
    if subjects.len() > 10 {
        body.push_str(match lang {
            Language::PtBr => "\n- ...",
            Language::En => "\n- ...",
        });
    }
    Rendered { subject, body }
}

/// The text of a test send.
pub fn test_message(channel_name: &str, lang: Language) -> Rendered {
    match lang {
        Language::PtBr => Rendered {
            subject: "[TESTE] Notificação de teste do OctoISP".into(),
            body: format!("Este canal ({channel_name}) está configurado corretamente."),
        },
        Language::En => Rendered {
            subject: "[TEST] OctoISP test notification".into(),
            body: format!("This channel ({channel_name}) is set up correctly."),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_localized() {
        assert_eq!(number(1234.5, Language::PtBr), "1.234,5");
        assert_eq!(number(1234.5, Language::En), "1,234.5");
        assert_eq!(number(4999.0, Language::PtBr), "4.999");
        assert_eq!(number(4999.0, Language::En), "4,999");
        assert_eq!(number(1_234_567.891, Language::PtBr), "1.234.567,89");
        assert_eq!(number(-0.5, Language::En), "-0.5");
        assert_eq!(number(12.0, Language::En), "12");
        assert_eq!(number(0.0, Language::PtBr), "0");
    }

    #[test]
    fn a_group_reads_as_its_lead_plus_dependents_in_each_language() {
        let facts = serde_json::json!({"metric": "rx_bps", "value": 1234.5, "threshold": 1000, "operator": ">", "unit": "Mbit/s"});
        let ev = EventText {
            kind: "firing",
            severity: "critical",
            rule_name: "uplink down",
            target: "POP Centro",
            facts: &facts,
            dependents: 4999,
        };
        let pt = render(&ev, Language::PtBr);
        assert_eq!(
            pt.subject,
            "[CRÍTICO] POP Centro: uplink down (+4.999 alertas dependentes)"
        );
        assert!(
            pt.body
                .contains("rx_bps = 1.234,5 Mbit/s (limite > 1.000 Mbit/s)"),
            "{}",
            pt.body
        );
        let en = render(&ev, Language::En);
        assert_eq!(
            en.subject,
            "[CRITICAL] POP Centro: uplink down (+4,999 dependent alerts)"
        );
        assert!(
            en.body.starts_with("Alert firing (CRITICAL)"),
            "{}",
            en.body
        );
        let resolved = render(
            &EventText {
                kind: "resolved",
                dependents: 0,
                ..ev
            },
            Language::PtBr,
        );
        assert_eq!(resolved.subject, "[RESOLVIDO] POP Centro: uplink down");
    }
}

//! Captures of real devices from the `snmpsim-data` dataset (BSD licence, in `tests/data/snmp/snmpsim-data/`,
//! trimmed to the system, interfaces, host-resources and entity subtrees), served by the agent's simulator:
//! fingerprints and interface metrics as the devices themselves describe them.

mod snmp_support;

use octoisp_agent::snmp::collect::{DeviceState, PollReport};
use snmp_support::*;

async fn poll_capture(name: &str) -> (DeviceState, PollReport) {
    poll_recording(&format!("snmpsim-data/{name}")).await
}

/// Interfaces the device itself lists (rows of ifIndex in the capture).
fn recorded_interfaces(name: &str) -> usize {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/snmp/snmpsim-data")
        .join(format!("{name}.snmprec"));
    std::fs::read_to_string(path)
        .expect("capture")
        .lines()
        .filter(|l| l.starts_with("1.3.6.1.2.1.2.2.1.1."))
        .count()
}

/// Interfaces the poll reported (distinct ifIndex labels of `if.oper_status`).
fn polled_interfaces(r: &PollReport) -> usize {
    r.metrics
        .iter()
        .filter(|m| m.metric == "if.oper_status")
        .filter_map(|m| m.labels.iter().find(|(k, _)| k == "ifIndex"))
        .map(|(_, v)| v.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

fn has(r: &PollReport, metric: &str) -> bool {
    r.metrics.iter().any(|m| m.metric == metric)
}

/// A capture and what its device says it is: vendor, OS, model, version.
type Case = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
);

#[tokio::test]
async fn captures_of_real_devices_are_fingerprinted_and_polled() {
    // (capture, vendor, os, model, version) as the sysDescr of each device says.
    let cases: [Case; 6] = [
        (
            "cisco-c3560",
            "Cisco",
            Some("IOS"),
            None,
            Some("12.2(55)SE3"),
        ),
        (
            "huawei-s5720",
            "Huawei",
            Some("VRP"),
            Some("S5720"),
            Some("5.160"),
        ),
        (
            "zte-zxr10-5250",
            "ZTE",
            Some("ZXR10"),
            Some("5250-52TM-H"),
            None,
        ),
        (
            "juniper-mx960-16-1r6-7-a",
            "Juniper",
            Some("Junos"),
            Some("mx960"),
            Some("16.1R6.7"),
        ),
        ("ubiquiti-m5", "Ubiquiti", Some("airOS"), None, None),
        (
            "slackware",
            "net-snmp",
            Some("Linux"),
            None,
            Some("2.6.21.5-smp"),
        ),
    ];
    for (name, vendor, os, model, version) in cases {
        let (st, r) = poll_capture(name).await;
        assert_eq!(r.error, None, "{name}");
        let fp = st
            .fingerprint()
            .unwrap_or_else(|| panic!("{name}: no fingerprint"));
        assert_eq!(
            (
                fp.vendor.as_deref(),
                fp.os.as_deref(),
                fp.version.as_deref()
            ),
            (Some(vendor), os, version),
            "{name}: {fp:?}"
        );
        if model.is_some() {
            assert_eq!(fp.model.as_deref(), model, "{name}");
        }
        let recorded = recorded_interfaces(name);
        assert!(recorded > 0, "{name}: the capture lists interfaces");
        assert_eq!(
            polled_interfaces(&r),
            recorded,
            "{name}: every interface polled"
        );
        assert!(
            has(&r, "sys.uptime_seconds") && has(&r, "if.speed_bps"),
            "{name}"
        );
    }

    // The airMAX radio gets its vendor profile: signal and CCQ from Ubiquiti's own MIB.
    let (st, r) = poll_capture("ubiquiti-m5").await;
    assert!(st.profile_names().contains(&"ubiquiti-airmax".to_owned()));
    assert!(has(&r, "wireless.signal_dbm") && has(&r, "wireless.ccq_percent"));
    // A Linux host with net-snmp: CPU and storage from HOST-RESOURCES.
    let (_, r) = poll_capture("slackware").await;
    assert!(has(&r, "cpu.load_percent") && has(&r, "storage.used_bytes"));

    // No rule knows Vyatta: the device is still named, from the IANA registry by its sysObjectID.
    let (st, _) = poll_capture("vyatta-unknown").await;
    let fp = st.fingerprint().expect("fingerprint");
    assert_eq!(fp.rule, None);
    assert_eq!(fp.vendor.as_deref(), Some("Vyatta, Inc."));
    assert_eq!(fp.enterprise.as_deref(), Some("Vyatta, Inc."));
}

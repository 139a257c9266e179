//! The real data-model dumps in `tests/data/cpe-models/` (copied from `shared/data/cpe-models`, MIT, see its
//! README and LICENSE): each loads, its normalized view is right (optical power in dBm above all), and a
//! simulated CPE holding the whole tree syncs it into the store through a session.

mod acs_support;

use std::collections::BTreeMap;

use acs_support::cpe::{Cpe, CpeConfig};
use acs_support::{load_model, model_tree, models_dir, start};
use octoisp_agent::acs::cwmp::ParameterValue;
use octoisp_agent::acs::normalize::{Rules, Value};
use octoisp_agent::acs::session::AcsOptions;
use octoisp_agent::acs::tasks::TaskKind;

fn view_of(file: &str) -> BTreeMap<String, Value> {
    let params = load_model(&models_dir().join(file));
    let tree: Vec<ParameterValue> = params
        .iter()
        .filter(|p| !p.object)
        .map(|p| ParameterValue {
            name: p.name.clone(),
            value: p.value.clone(),
            xsd_type: p.xsd_type.clone(),
        })
        .collect();
    Rules::builtin().view(&tree)
}

fn dbm(view: &BTreeMap<String, Value>, field: &str) -> Option<f64> {
    match view.get(field) {
        Some(Value::Dbm(d)) => Some(*d),
        None => None,
        other => panic!("{field}: {other:?}"),
    }
}

#[test]
fn every_model_loads_with_its_identity() {
    let mut files: Vec<_> = std::fs::read_dir(models_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 6);
    for f in files {
        let params = load_model(&f);
        assert!(params.len() > 500, "{}: {} rows", f.display(), params.len());
        assert!(
            params
                .iter()
                .any(|p| p.name.ends_with("DeviceInfo.SoftwareVersion") && !p.value.is_empty()),
            "{}: no software version",
            f.display()
        );
    }
}

#[test]
fn optical_power_in_dbm_for_every_model() {
    // (file, rx dBm, tx dBm): Huawei reports dBm in X_GponInterafceConfig (typo theirs); TP-Link's
    // X_TP_GPON_Config is in tenths of a microwatt (5624 -> 10 log10(0.5624 mW) = -2.50 dBm) and its TR-181
    // OpticalSignalLevel reads 0 (unsupported, skipped); routers and the WiMAX CPE have no optics.
    let cases = [
        (
            "device-00259E-EG8145V5-48575443A94196A5.csv",
            Some(-3.0),
            Some(2.0),
        ),
        ("device-eg8145x6-static-wan.csv", Some(-6.0), Some(2.0)),
        (
            "device-1C61B4-XX230v-22275A7000395.csv",
            Some(-2.5),
            Some(1.73),
        ),
        ("device-1C61B4-EX220-2226469000523.csv", None, None),
        ("device-C0B101-ZXHN-H199A-ZTEYH86LCN10105.csv", None, None),
        ("device-202BC1-BM632w-8KA8WA1151100043.csv", None, None),
    ];
    for (file, rx, tx) in cases {
        let view = view_of(file);
        assert_eq!(dbm(&view, "optical_rx_dbm"), rx, "{file} rx");
        assert_eq!(dbm(&view, "optical_tx_dbm"), tx, "{file} tx");
    }
}

#[test]
fn the_rest_of_the_normalized_view_across_tr098_and_tr181() {
    let huawei = view_of("device-00259E-EG8145V5-48575443A94196A5.csv");
    assert_eq!(huawei["firmware"], Value::Text("V5R020C00S280".into()));
    assert_eq!(huawei["uptime_s"], Value::Int(89910));
    assert_eq!(
        huawei["wan_ip"],
        Value::Text("192.168.89.198".into()),
        "first PPP connection that is up"
    );
    assert_eq!(
        huawei["ssids"],
        Value::List(vec!["Anlix-EG8145".into(), "Anlix-EG8145-5G".into()])
    );
    let static_wan = view_of("device-eg8145x6-static-wan.csv");
    assert_eq!(static_wan["wan_ip"], Value::Text("192.168.88.120".into()));
    let zte = view_of("device-C0B101-ZXHN-H199A-ZTEYH86LCN10105.csv");
    assert_eq!(zte["pppoe_user"], Value::Text("admin123".into()));
    assert_eq!(zte["wifi_clients"], Value::Int(1));
    let tplink = view_of("device-1C61B4-XX230v-22275A7000395.csv");
    assert_eq!(tplink["wan_ip"], Value::Text("192.168.89.137".into()));
    assert_eq!(tplink["pppoe_user"], Value::Text("admin123".into()));
    assert_eq!(tplink["wifi_channel"], Value::Int(10));
    let ex220 = view_of("device-1C61B4-EX220-2226469000523.csv");
    assert_eq!(
        ex220["wan_ip"],
        Value::Text("192.168.88.38".into()),
        "not the LAN interface"
    );
    assert_eq!(ex220["wifi_clients"], Value::Int(2));
}

#[tokio::test]
async fn a_whole_tree_synced_through_a_session_gives_the_same_view() {
    // A GetParameterValuesResponse of the whole tree is about 1 MiB.
    let opts = AcsOptions {
        max_body: 8 << 20,
        limits: octoisp_agent::acs::cwmp::Limits {
            max_bytes: 8 << 20,
            ..Default::default()
        },
        ..AcsOptions::default()
    };
    let acs = start(opts).await;
    let params = load_model(&models_dir().join("device-1C61B4-XX230v-22275A7000395.csv"));
    let mut cfg = CpeConfig::zte("22275A7000395");
    cfg.manufacturer = "TP-Link".into();
    cfg.oui = "1C61B4".into();
    cfg.product_class = "Device2".into();
    cfg.inform_params = vec!["Device.DeviceInfo.SoftwareVersion".into()];
    let cpe = Cpe::new(cfg, model_tree(&params));
    cpe.session(acs.addr, &["0 BOOTSTRAP"]).await.unwrap();
    let id = cpe.cfg.device_id();
    assert_eq!(
        id, "1C61B4-Device2-22275A7000395",
        "the id GenieACS gave it too"
    );
    acs.acs
        .enqueue(
            &id,
            TaskKind::Refresh {
                path: "Device.".into(),
            },
        )
        .await
        .unwrap();
    let log = cpe.session(acs.addr, &["2 PERIODIC"]).await.unwrap();
    assert_eq!(log.rpcs, ["GetParameterValues"]);
    let stored = acs.acs.store.params(&id, "").unwrap();
    assert!(stored.len() > 3000, "{} parameters stored", stored.len());
    let view = Rules::builtin().view(&stored);
    assert_eq!(view["optical_rx_dbm"], Value::Dbm(-2.5));
    assert_eq!(view["wan_ip"], Value::Text("192.168.89.137".into()));
}

//! Codec tests: envelopes as Huawei, ZTE and TP-Link CPEs send them, every RPC built and parsed back, every
//! fault code. The envelopes are the fuzz target's seeds (`agent/fuzz/corpus/cwmp_parse/`).

use super::*;

macro_rules! seed {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/corpus/cwmp_parse/",
            $name
        ))
    };
}

fn limits() -> Limits {
    Limits::default()
}

#[test]
fn huawei_inform_cwmp_1_0_with_uppercase_prefixes() {
    let env = parse(seed!("golden-huawei-eg8145v5-inform.xml"), &limits()).unwrap();
    assert_eq!(env.ns, CwmpVersion::V1_0);
    assert_eq!(env.id.as_deref(), Some("1681"));
    let Body::Inform(i) = env.body else {
        panic!("not an Inform")
    };
    assert_eq!(i.device_id.oui, "00259E");
    assert_eq!(i.device_id.product_class, "EG8145V5");
    assert_eq!(i.device_id.serial_number, "48575443A94196A5");
    assert_eq!(i.device_id.manufacturer, "Huawei Technologies Co., Ltd");
    let codes: Vec<_> = i.events.iter().map(|e| e.code.as_str()).collect();
    assert_eq!(codes, ["1 BOOT", "M Reboot"]);
    assert_eq!(i.events[1].command_key, "octoisp-7");
    assert_eq!(i.parameters.len(), 8);
    assert_eq!(i.parameters[2].value, "V5R020C00S280");
    assert_eq!(i.parameters[4].value, "", "empty values stay empty");
}

#[test]
fn zte_inform_cwmp_1_2_with_space_in_product_class_and_escapes() {
    let env = parse(seed!("golden-zte-h199a-inform.xml"), &limits()).unwrap();
    assert_eq!(env.ns, CwmpVersion::V1_2);
    let Body::Inform(i) = env.body else {
        panic!("not an Inform")
    };
    assert_eq!(i.device_id.product_class, "ZXHN H199A");
    assert_eq!(i.events[0].code, "2 PERIODIC");
    assert_eq!(i.events[0].command_key, "");
    assert_eq!(i.parameters[3].value, "Anlix-ZTE-H199 & <guest>");
}

#[test]
fn tplink_tr181_inform_keeps_types_and_retry_count() {
    let env = parse(seed!("golden-tplink-xx230v-inform.xml"), &limits()).unwrap();
    let Body::Inform(i) = env.body else {
        panic!("not an Inform")
    };
    assert_eq!(i.retry_count, 2);
    assert_eq!(i.events.len(), 2);
    assert_eq!(i.parameters[2].xsd_type, "xsd:unsignedInt");
    assert_eq!(i.parameters[4].value, "5624");
}

#[test]
fn cpe_fault_with_per_parameter_faults() {
    let env = parse(seed!("golden-cpe-spv-fault.xml"), &limits()).unwrap();
    assert_eq!(env.ns, CwmpVersion::V1_2, "namespace taken from the detail");
    let Body::Fault(f) = env.body else {
        panic!("not a fault")
    };
    assert_eq!(f.code.code(), 9003);
    assert_eq!(f.set_parameter_values.len(), 2);
    assert_eq!(f.set_parameter_values[1].code, 9008);
}

#[test]
fn transfer_complete_with_fault_zero_is_a_success() {
    let env = parse(seed!("golden-transfer-complete.xml"), &limits()).unwrap();
    let Body::TransferComplete(t) = env.body else {
        panic!("not a TransferComplete")
    };
    assert_eq!(t.command_key, "fw-2024-01");
    assert_eq!(t.fault, None);
}

#[test]
fn bad_inputs_are_errors_with_the_right_fault() {
    let bomb = parse(seed!("bad-billion-laughs.xml"), &limits()).unwrap_err();
    assert_eq!(bomb, CwmpError::Doctype);
    assert!(matches!(
        parse(seed!("bad-entity-without-doctype.xml"), &limits()),
        Err(CwmpError::Entity(_))
    ));
    assert!(matches!(
        parse(seed!("bad-wrong-cwmp-namespace.xml"), &limits()),
        Err(CwmpError::Namespace(_))
    ));
    assert!(matches!(
        parse(seed!("bad-not-soap.xml"), &limits()),
        Err(CwmpError::Namespace(_))
    ));
    let unknown = parse(seed!("bad-unknown-method.xml"), &limits()).unwrap_err();
    assert_eq!(unknown.fault_code(), 8000);
    assert_eq!(
        parse(seed!("bad-too-deep.xml"), &limits()).unwrap_err(),
        CwmpError::TooComplex
    );
    assert_eq!(
        parse(seed!("bad-not-utf8.xml"), &limits()).unwrap_err(),
        CwmpError::Encoding
    );
    let small = Limits {
        max_bytes: 100,
        ..Limits::default()
    };
    assert!(matches!(
        parse(seed!("golden-transfer-complete.xml"), &small),
        Err(CwmpError::TooLarge { .. })
    ));
}

fn every_body() -> Vec<Body> {
    let pv = vec![
        ParameterValue::string("Device.WiFi.SSID.1.SSID", "café <&> \"x\""),
        ParameterValue {
            name: "Device.DeviceInfo.UpTime".into(),
            value: "42".into(),
            xsd_type: "xsd:unsignedInt".into(),
        },
    ];
    let tr = TransferResponse {
        status: 1,
        start_time: "0001-01-01T00:00:00Z".into(),
        complete_time: "0001-01-01T00:00:00Z".into(),
    };
    vec![
        Body::Inform(Inform {
            device_id: DeviceId {
                manufacturer: "ZTE".into(),
                oui: "C0B101".into(),
                product_class: "ZXHN H199A".into(),
                serial_number: "ZTEYH86LCN10105".into(),
            },
            events: vec![EventStruct {
                code: "M Download".into(),
                command_key: "k1".into(),
            }],
            max_envelopes: 1,
            current_time: "2024-01-01T00:00:00Z".into(),
            retry_count: 3,
            parameters: pv.clone(),
        }),
        Body::InformResponse { max_envelopes: 1 },
        Body::GetRPCMethods,
        Body::GetRPCMethodsResponse(vec!["Inform".into(), "TransferComplete".into()]),
        Body::TransferComplete(TransferComplete {
            command_key: "k".into(),
            fault: Some((9010, "Download failure".into())),
            start_time: "a".into(),
            complete_time: "b".into(),
        }),
        Body::TransferCompleteResponse,
        Body::AutonomousTransferComplete(AutonomousTransferComplete {
            announce_url: "http://a".into(),
            transfer_url: "http://t".into(),
            is_download: true,
            file_type: "1 Firmware Upgrade Image".into(),
            file_size: 1 << 33,
            target_file_name: "fw.bin".into(),
            fault: None,
            start_time: "s".into(),
            complete_time: "c".into(),
        }),
        Body::AutonomousTransferCompleteResponse,
        Body::RequestDownload {
            file_type: "1 Firmware Upgrade Image".into(),
            args: vec![("Version".into(), "2.0".into())],
        },
        Body::RequestDownloadResponse,
        Body::GetParameterNames {
            path: "Device.WiFi.".into(),
            next_level: true,
        },
        Body::GetParameterNamesResponse(vec![ParameterInfo {
            name: "Device.WiFi.SSID.".into(),
            writable: false,
        }]),
        Body::GetParameterValues(vec!["Device.DeviceInfo.".into()]),
        Body::GetParameterValuesResponse(pv.clone()),
        Body::SetParameterValues {
            list: pv.clone(),
            parameter_key: "octoisp-1".into(),
        },
        Body::SetParameterValuesResponse { status: 1 },
        Body::GetParameterAttributes(vec!["Device.DeviceInfo.UpTime".into()]),
        Body::GetParameterAttributesResponse(vec![ParameterAttribute {
            name: "Device.DeviceInfo.UpTime".into(),
            notification: 2,
            access_list: vec!["Subscriber".into()],
        }]),
        Body::SetParameterAttributes(vec![SetParameterAttribute {
            name: "Device.DeviceInfo.SoftwareVersion".into(),
            notification_change: true,
            notification: 2,
            access_list_change: false,
            access_list: vec![],
        }]),
        Body::SetParameterAttributesResponse,
        Body::AddObject {
            object_name: "Device.NAT.PortMapping.".into(),
            parameter_key: "pk".into(),
        },
        Body::AddObjectResponse {
            instance_number: 7,
            status: 0,
        },
        Body::DeleteObject {
            object_name: "Device.NAT.PortMapping.7.".into(),
            parameter_key: "pk".into(),
        },
        Body::DeleteObjectResponse { status: 0 },
        Body::Reboot {
            command_key: "r1".into(),
        },
        Body::RebootResponse,
        Body::FactoryReset,
        Body::FactoryResetResponse,
        Body::Download(Download {
            command_key: "fw".into(),
            file_type: "1 Firmware Upgrade Image".into(),
            url: "http://10.0.0.1:7547/firmware/a.bin".into(),
            username: "u".into(),
            password: "p".into(),
            file_size: 12345,
            target_file_name: "a.bin".into(),
            delay_seconds: 0,
            success_url: String::new(),
            failure_url: String::new(),
        }),
        Body::DownloadResponse(tr.clone()),
        Body::Upload(Upload {
            command_key: "up".into(),
            file_type: "2 Vendor Log File".into(),
            url: "http://10.0.0.1/upload".into(),
            username: String::new(),
            password: String::new(),
            delay_seconds: 5,
        }),
        Body::UploadResponse(tr),
        Body::ScheduleInform {
            delay_seconds: 30,
            command_key: "si".into(),
        },
        Body::ScheduleInformResponse,
        Body::Fault(Fault {
            code: FaultCode::from_u32(9003),
            string: "Invalid arguments".into(),
            set_parameter_values: vec![SetParameterValuesFault {
                parameter_name: "Device.X".into(),
                code: 9005,
                string: "Invalid parameter name".into(),
            }],
        }),
    ]
}

#[test]
fn every_rpc_builds_and_parses_back_in_each_namespace() {
    let bodies = every_body();
    assert_eq!(bodies.len(), 35, "one of each Body variant");
    for ns in [
        CwmpVersion::V1_0,
        CwmpVersion(1),
        CwmpVersion::V1_2,
        CwmpVersion(4),
    ] {
        for body in &bodies {
            let env = Envelope::new(ns, Some("id-1".into()), body.clone());
            let bytes = build(&env);
            let back = parse(&bytes, &limits()).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}\n{}",
                    body.method_name(),
                    String::from_utf8_lossy(&bytes)
                )
            });
            assert_eq!(back, env, "{}", body.method_name());
            let text = String::from_utf8(bytes).unwrap();
            assert!(text.contains(&format!("\"urn:dslforum-org:cwmp-1-{}\"", ns.0)));
        }
    }
}

#[test]
fn every_fault_code_survives_a_soap_fault() {
    for &(code, meaning, side) in fault::FAULT_TABLE {
        let env = Envelope::new(CwmpVersion::V1_0, None, Body::Fault(Fault::new(code)));
        let bytes = build(&env);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.contains(&format!("<faultcode>{side}</faultcode>")),
            "{code}"
        );
        let Body::Fault(f) = parse(&bytes, &limits()).unwrap().body else {
            panic!("{code}: not a fault");
        };
        assert_eq!(f.code.code(), code);
        assert_eq!(f.string, meaning);
    }
}

#[test]
fn hold_requests_header_round_trips() {
    let mut env = Envelope::new(CwmpVersion::V1_2, Some("9".into()), Body::GetRPCMethods);
    env.hold_requests = Some(true);
    assert_eq!(parse(&build(&env), &limits()).unwrap(), env);
}

#[test]
fn unprefixed_method_takes_the_header_namespace() {
    let doc = br#"<Envelope xmlns="http://schemas.xmlsoap.org/soap/envelope/"><Header><ID xmlns="urn:dslforum-org:cwmp-1-2">7</ID></Header><Body><GetRPCMethods xmlns=""/></Body></Envelope>"#;
    let env = parse(doc, &limits()).unwrap();
    assert_eq!(env.body, Body::GetRPCMethods);
    assert_eq!(env.ns, CwmpVersion::V1_2);
}

//! An ERP.net instance's auto-discovery document, then a call and a profile request that
//! depend on what it said: whatever the document holds, the token goes only to the instance.
#![no_main]
use erpnet_auth::{ApiRequest, Config, RequestKind, Session};
use erpnet_auth_fuzz::{drain, response, Counting, T0};
use libfuzzer_sys::fuzz_target;

const ROOT: &str = "https://demodb.my.erp.net";

fuzz_target!(|data: &[u8]| {
    let config = Config::erpnet(ROOT).reference_token("enrt_fuzz").build().expect("config");
    let mut session = Session::with_random(config, Counting::default());
    let sites = drain(&mut session).into_iter().find(|r| r.kind == RequestKind::Sites).expect("the sites request");
    session.handle_response(T0, sites.id, response(data)).expect("an answer to an open request");
    drain(&mut session);
    session.call_api(T0, ApiRequest::get("Crm_Customers")).expect("a relative call");
    let _ = session.fetch_profile(T0);
    for request in drain(&mut session) {
        if request.header("authorization").is_some() {
            assert!(request.url.starts_with("https://demodb.my.erp.net/"), "the token left the instance");
        }
    }
});

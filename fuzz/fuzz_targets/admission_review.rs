//! The admission parser on the wire: any bytes as an `AdmissionReview`, its request decided by
//! the same rules the webhook applies (no policies, no servers, no namespace labels). Nothing
//! panics, and a refusal always says why.
#![no_main]

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview};
use libfuzzer_sys::fuzz_target;
use palisade_admission::decide::{self, Inputs};
use palisade_admission::review::Claimed;

fuzz_target!(|data: &[u8]| {
    let Ok(review) = serde_json::from_slice::<AdmissionReview<DynamicObject>>(data) else {
        return;
    };
    let Ok(req): Result<AdmissionRequest<DynamicObject>, _> = review.try_into() else { return };
    let Some(Ok(object)) = req.object.as_ref().map(serde_json::to_value) else { return };
    let claimed = |_: &str| Claimed::Missing;
    let inputs = Inputs {
        namespace_labels: None,
        policies: &[],
        claimed: &claimed,
        gateway_image: None,
        servers: None,
    };
    let decision = decide::decide(&req.kind.kind, &object, &inputs);
    assert!(decision.allowed || !decision.message.is_empty(), "a refusal without a reason");
});

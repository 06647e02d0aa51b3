//! The stack loader on arbitrary text: it must answer every input with a
//! stack or with problems, never panic, loop or overflow its stack.
//!
//! The loader lives in the core crate, so fuzzing doesn't build the AWS SDK.

#![no_main]

use ihp_infra_core::stack;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |_: &str| Some("fuzz-password-1".to_string());
    if let Err(problems) = stack::parse(std::path::Path::new("fuzz.yaml"), text, &env) {
        // Every problem has a place and a field to name.
        for p in problems {
            assert!(!p.field.is_empty(), "a problem without a field: {p:?}");
            assert!(!p.message.is_empty(), "a problem without a message: {p:?}");
        }
    }
});

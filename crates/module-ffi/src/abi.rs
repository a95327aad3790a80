//! Our declarations of the part of Envoy's dynamic-module ABI this module uses, written from
//! `source/extensions/dynamic_modules/abi/abi.h` (ABI v0.2.0, Envoy 1.40): the C types, and
//! the callbacks Envoy exports (resolved against Envoy's own symbols when it loads us).
//! Enums travel as C `int`s: incoming ones are read as `u32` (a later Envoy may add values,
//! and a Rust enum holding an unknown discriminant would be undefined behaviour).

use std::ffi::c_void;

/// The ABI version this module is written against (Envoy 1.40). Envoy compares it with its
/// own; another only warns, so `docs/in-proxy.md` says which Envoy versions a build supports.
pub const ABI_VERSION: &std::ffi::CStr = c"v0.2.0";

pub type ConfigEnvoyPtr = *mut c_void;
pub type ConfigModulePtr = *const c_void;
pub type FilterEnvoyPtr = *mut c_void;
pub type FilterModulePtr = *const c_void;
/// Made by Envoy, owned by us: deleted exactly once.
pub type ConfigSchedulerPtr = *mut c_void;

/// Bytes Envoy owns, valid during the hook that handed them over (and until a setter on
/// the same map). May be `{null, 0}`; never NUL-terminated; not necessarily UTF-8.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnvoyBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

/// Bytes we own, copied by Envoy during the call they are passed to.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleBuffer {
    pub ptr: *const u8,
    pub length: usize,
}

impl ModuleBuffer {
    pub fn of(bytes: &[u8]) -> Self {
        Self {
            ptr: bytes.as_ptr(),
            length: bytes.len(),
        }
    }
}

/// A header Envoy hands over (`envoy_dynamic_module_type_envoy_http_header`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnvoyHeader {
    pub key_ptr: *const u8,
    pub key_length: usize,
    pub value_ptr: *const u8,
    pub value_length: usize,
}

/// A header we pass (`envoy_dynamic_module_type_module_http_header`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleHeader {
    pub key_ptr: *const u8,
    pub key_length: usize,
    pub value_ptr: *const u8,
    pub value_length: usize,
}

impl ModuleHeader {
    pub fn of(key: &str, value: &str) -> Self {
        Self {
            key_ptr: key.as_ptr(),
            key_length: key.len(),
            value_ptr: value.as_ptr(),
            value_length: value.len(),
        }
    }
}

/// `envoy_dynamic_module_type_http_header_type`: the request's headers.
pub const REQUEST_HEADER: u32 = 0;

/// `on_http_filter_request_headers_status` (and trailers): Continue, StopIteration.
pub const HEADERS_CONTINUE: u32 = 0;
pub const HEADERS_STOP_ITERATION: u32 = 1;
/// `on_http_filter_request_body_status`: Continue, StopIterationAndWatermark.
pub const BODY_CONTINUE: u32 = 0;
pub const BODY_STOP_AND_WATERMARK: u32 = 2;

/// `envoy_dynamic_module_type_http_callout_init_result`: Success.
pub const CALLOUT_INIT_SUCCESS: u32 = 0;
/// `envoy_dynamic_module_type_http_callout_result`: Success.
pub const CALLOUT_SUCCESS: u32 = 0;
/// `envoy_dynamic_module_type_metrics_result`: Success.
pub const METRICS_SUCCESS: u32 = 0;
/// `envoy_dynamic_module_type_log_level`: Info, Warn, Error.
pub const LOG_INFO: u32 = 2;
pub const LOG_WARN: u32 = 3;
pub const LOG_ERROR: u32 = 4;

unsafe extern "C" {
    pub fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer);

    pub fn envoy_dynamic_module_callback_http_get_headers_size(
        filter: FilterEnvoyPtr,
        header_type: u32,
    ) -> usize;

    pub fn envoy_dynamic_module_callback_http_get_headers(
        filter: FilterEnvoyPtr,
        header_type: u32,
        result: *mut EnvoyHeader,
    ) -> bool;

    /// Replaces every value of `key`; a null or empty `value` removes the header.
    pub fn envoy_dynamic_module_callback_http_set_header(
        filter: FilterEnvoyPtr,
        header_type: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    /// Adds a value of `key` (the header's other values, if any, stay).
    pub fn envoy_dynamic_module_callback_http_add_header(
        filter: FilterEnvoyPtr,
        header_type: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_send_response(
        filter: FilterEnvoyPtr,
        status_code: u32,
        headers: *const ModuleHeader,
        headers_size: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );

    /// Sets `key` in the request's filter state to `value` (bytes, read-only once set, for
    /// this request: Envoy's `StringAccessor`); false when the stream has none.
    pub fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
        filter: FilterEnvoyPtr,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    /// Reads `key` from the request's filter state into `result` (Envoy's bytes, valid until
    /// the hook returns or the key is set); false when it is not set, or not bytes.
    pub fn envoy_dynamic_module_callback_http_get_filter_state_bytes(
        filter: FilterEnvoyPtr,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
    ) -> bool;

    /// Merges a serialized `google.protobuf.Struct` into the dynamic metadata namespace
    /// `namespace` (bytes that do not parse are logged by Envoy and set nothing). Added to
    /// the ABI after the 1.40-dev header the rest was written from: its parameters were read
    /// off the v1.40.0 binary (filter pointer, then two buffers; no return value).
    pub fn envoy_dynamic_module_callback_http_set_dynamic_metadata_struct(
        filter: FilterEnvoyPtr,
        namespace: ModuleBuffer,
        serialized: ModuleBuffer,
    );

    pub fn envoy_dynamic_module_callback_http_filter_http_callout(
        filter: FilterEnvoyPtr,
        callout_id_out: *mut u64,
        cluster_name: ModuleBuffer,
        headers: *const ModuleHeader,
        headers_size: usize,
        body: ModuleBuffer,
        timeout_milliseconds: u64,
    ) -> u32;

    pub fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter: FilterEnvoyPtr);

    pub fn envoy_dynamic_module_callback_http_filter_get_worker_index(
        filter: FilterEnvoyPtr,
    ) -> u32;

    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
        config: ConfigEnvoyPtr,
    ) -> ConfigSchedulerPtr;

    /// Safe from any thread: Envoy then calls `on_http_filter_config_scheduled` on its main
    /// thread with `event_id` (or nothing, if the configuration is gone).
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
        scheduler: ConfigSchedulerPtr,
        event_id: u64,
    );

    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(
        scheduler: ConfigSchedulerPtr,
    );

    /// A callout from the configuration (main thread); its answer comes to
    /// `on_http_filter_config_http_callout_done`.
    pub fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        config: ConfigEnvoyPtr,
        callout_id_out: *mut u64,
        cluster_name: ModuleBuffer,
        headers: *const ModuleHeader,
        headers_size: usize,
        body: ModuleBuffer,
        timeout_milliseconds: u64,
    ) -> u32;

    pub fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_length: usize,
        counter_id: *mut usize,
    ) -> u32;

    pub fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        config: ConfigEnvoyPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;

    pub fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
}

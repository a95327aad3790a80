//! `libjwt_authz_module.so`: jwt-authz as an Envoy dynamic module
//! (`envoy.filters.http.dynamic_modules`, ABI v0.2.0 of Envoy 1.40). This crate is the only
//! one where `unsafe` is allowed: our declarations of the ABI ([`abi`]), the hooks Envoy calls
//! (here), and [`EnvoyStream`], the safe API over Envoy's callbacks that the filter's logic
//! (`jwt-authz-module`) uses. Every unsafe block says why it is sound.
//!
//! No panic crosses into Envoy: every hook runs its work under `catch_unwind`; a panic is
//! counted (`jwt_authz_module_panics`), answered 503 where a request can still be answered,
//! and leaves the filter poisoned (its later hooks do nothing but let a paused request be).

mod abi;
mod alloc;

use std::borrow::Cow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use abi::{
    ConfigEnvoyPtr, ConfigModulePtr, ConfigSchedulerPtr, EnvoyBuffer, EnvoyHeader, FilterEnvoyPtr,
    FilterModulePtr, ModuleBuffer, ModuleHeader,
};
use jwt_authz_module::{Config, Filter, Flow, GUARD_FILTER, Metric, Stream, apply, guard, now_ms};

/// What the pointers we hand Envoy point to: each of our configurations and filters starts
/// with one of these bytes (`#[repr(C)]`, first field), so a hook can tell the filter's
/// from the guard's without trusting anything but our own allocations.
const FILTER: u8 = 1;
const GUARD: u8 = 2;

/// The kind byte at the start of one of our configurations or filters; `None` for null.
///
/// # Safety
/// `ptr` must be null or a live pointer this library handed Envoy (a [`ModuleConfig`],
/// [`GuardConfig`] or [`ModuleFilter`], all `#[repr(C)]` with the kind first).
unsafe fn kind_of(ptr: *const std::ffi::c_void) -> Option<u8> {
    // SAFETY: by this function's contract, a live struct whose first field is the `u8` kind.
    unsafe { (ptr as *const u8).as_ref().copied() }
}

/// The guard's configuration ([`GUARD_FILTER`]): its counters (only
/// [`Metric::GuardRefused`] is defined). It is also every guard filter's pointer: a guard
/// keeps nothing per request, so no request allocates one.
#[repr(C)]
struct GuardConfig {
    kind: u8,
    counters: [Option<usize>; Metric::ALL.len()],
}

/// What a configuration of the filter holds: the logic's configuration, the counters' ids
/// Envoy gave at definition, and the poll of the sidecar's generation (its timer thread, and
/// the callout in flight).
#[repr(C)]
struct ModuleConfig {
    /// [`FILTER`].
    kind: u8,
    config: Config,
    counters: [Option<usize>; Metric::ALL.len()],
    ticker: Option<Ticker>,
    /// The poll callout in flight, and the keys fetch (main thread only; locks for `Sync`).
    polling: Mutex<Option<u64>>,
    fetching: Mutex<Option<u64>>,
}

/// Envoy's configuration scheduler, handed to the timer thread.
struct Scheduler(ConfigSchedulerPtr);

// SAFETY: the ABI makes `config_scheduler_commit` safe from any thread, and the timer thread
// calls nothing else with it; it is deleted on the main thread after that thread is joined.
unsafe impl Send for Scheduler {}

/// Wakes the configuration on Envoy's main thread every poll interval (a dynamic module has
/// no timer of its own), until the configuration is destroyed.
struct Ticker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<Scheduler>>,
}

impl Ticker {
    fn start(scheduler: Scheduler, interval: Duration) -> std::io::Result<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("jwt-authz-poll".into())
            .spawn(move || {
                let (lock, wake) = &*flag;
                loop {
                    // SAFETY: commit is safe from any thread (see `Scheduler`); the scheduler
                    // is deleted only after this thread has returned it.
                    unsafe {
                        abi::envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
                            scheduler.0,
                            POLL_EVENT,
                        );
                    }
                    let stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                    let (stopped, _) = wake
                        .wait_timeout_while(stopped, interval, |stopped| !*stopped)
                        .unwrap_or_else(|p| p.into_inner());
                    if *stopped {
                        return scheduler;
                    }
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and gives back the scheduler (to delete) once it has returned. Envoy
    /// holds a strong reference to its configuration during `commit`, so the last one may be
    /// dropped, and `config_destroy` run, on the timer thread itself: then it cannot wait for
    /// itself: the thread ends at its next look at the flag,
    /// and the scheduler, still in use by the `commit` under way, is left undeleted (a few
    /// bytes, once per configuration torn down so).
    fn stop(mut self) -> Option<Scheduler> {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        wake.notify_all();
        let thread = self.thread.take()?;
        if thread.thread().id() == std::thread::current().id() {
            return None;
        }
        thread.join().ok()
    }
}

/// Request headers read without a heap buffer (more are read into one).
const INLINE_HEADERS: usize = 32;

/// The scheduler event that asks for a poll.
const POLL_EVENT: u64 = 1;

/// One request's filter: its logic and the configuration it came from (which Envoy keeps
/// alive until every filter made from it is destroyed).
#[repr(C)]
struct ModuleFilter {
    /// [`FILTER`].
    kind: u8,
    config: *const ModuleConfig,
    filter: Filter,
    /// A hook panicked (or the filter has no configuration): nothing more runs, and the
    /// request gets a 503 at the first hook that can still answer it.
    poisoned: bool,
    /// The request was answered (a local reply was sent).
    answered: bool,
}

/// Envoy's side of one request during a hook: the safe API.
struct EnvoyStream<'c> {
    envoy: FilterEnvoyPtr,
    counters: &'c [Option<usize>; Metric::ALL.len()],
    /// A local reply was sent during this hook.
    answered: bool,
}

/// Copies Envoy-owned bytes into an owned string (invalid UTF-8 read lossily).
///
/// # Safety
/// `ptr` must be null or valid for reads of `length` bytes for the duration of the call.
unsafe fn owned(ptr: *const u8, length: usize) -> String {
    // SAFETY: by this function's contract, for the call, which is all the borrow lasts.
    String::from_utf8_lossy(unsafe { borrowed(ptr, length) }).into_owned()
}

/// Envoy-owned bytes, borrowed.
///
/// # Safety
/// `ptr` must be null or valid for reads of `length` bytes, unchanged, for `'a`.
unsafe fn borrowed<'a>(ptr: *const u8, length: usize) -> &'a [u8] {
    if ptr.is_null() || length == 0 {
        return &[];
    }
    // SAFETY: non-null and, by this function's contract, valid and unchanged for `'a`.
    unsafe { std::slice::from_raw_parts(ptr, length) }
}

/// Bytes as text, as `jwt_authz_filter::engine::text` reads them (borrowed when UTF-8,
/// U+FFFD in place of what is not). Header names and values are ASCII but for rare values:
/// checked as such first, a test several times cheaper than UTF-8's for the short strings
/// most are (~30 instructions for a header name against ~110).
fn text(bytes: &[u8]) -> Cow<'_, str> {
    if bytes.is_ascii() {
        // SAFETY: ASCII bytes are valid UTF-8.
        return Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    String::from_utf8_lossy(bytes)
}

fn log(level: u32, message: &str) {
    // SAFETY: the buffer points to `message`, alive for the call; Envoy copies it.
    unsafe { abi::envoy_dynamic_module_callback_log(level, ModuleBuffer::of(message.as_bytes())) }
}

impl Stream for EnvoyStream<'_> {
    fn request_headers(&self) -> Vec<(&[u8], &[u8])> {
        // SAFETY: `envoy` is the filter pointer of the hook running now, on its worker.
        let count = unsafe {
            abi::envoy_dynamic_module_callback_http_get_headers_size(
                self.envoy,
                abi::REQUEST_HEADER,
            )
        };
        let empty = EnvoyHeader {
            key_ptr: std::ptr::null(),
            key_length: 0,
            value_ptr: std::ptr::null(),
            value_length: 0,
        };
        // Most requests have a few headers: room for them on the stack, on the heap past.
        let mut inline = [empty; INLINE_HEADERS];
        let mut spilled = Vec::new();
        let headers: &mut [EnvoyHeader] = if count <= INLINE_HEADERS {
            &mut inline[..count]
        } else {
            spilled.resize(count, empty);
            &mut spilled
        };
        // SAFETY: `headers` has room for the `count` entries Envoy writes; the pointer is
        // valid for the hook.
        let ok = unsafe {
            abi::envoy_dynamic_module_callback_http_get_headers(
                self.envoy,
                abi::REQUEST_HEADER,
                headers.as_mut_ptr(),
            )
        };
        if !ok {
            return Vec::new();
        }
        headers
            .iter()
            .map(|h| {
                // SAFETY: Envoy filled each entry with bytes of its header map, valid until
                // this hook returns or the map is changed. The borrow is of `self`, which
                // lives only during this hook, and every change to the map goes through a
                // `&mut self` method: the compiler ends these borrows before any change.
                let key = unsafe { borrowed(h.key_ptr, h.key_length) };
                // SAFETY: as for the key.
                let value = unsafe { borrowed(h.value_ptr, h.value_length) };
                (key, value)
            })
            .collect()
    }

    fn text<'b>(&self, bytes: &'b [u8]) -> Cow<'b, str> {
        text(bytes)
    }

    fn set_request_header(&mut self, name: &str, value: &str) {
        // SAFETY: both buffers point to live strings for the call (Envoy copies them); the
        // filter pointer is this hook's.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_header(
                self.envoy,
                abi::REQUEST_HEADER,
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            );
        }
    }

    fn remove_request_header(&mut self, name: &str) {
        // SAFETY: as in `set_request_header`; an empty value removes the header.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_header(
                self.envoy,
                abi::REQUEST_HEADER,
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::of(b""),
            );
        }
    }

    fn add_request_header(&mut self, name: &str, value: &str) {
        // SAFETY: as in `set_request_header` (Envoy copies both buffers).
        unsafe {
            abi::envoy_dynamic_module_callback_http_add_header(
                self.envoy,
                abi::REQUEST_HEADER,
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            );
        }
    }

    fn mark_decided(&mut self) -> bool {
        let (key, value) = jwt_authz_module::DECIDED;
        // SAFETY: the buffers point to static strings (Envoy copies them); the filter
        // pointer is this hook's.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_filter_state_bytes(
                self.envoy,
                ModuleBuffer::of(key.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            )
        }
    }

    fn decided(&self) -> bool {
        let (key, value) = jwt_authz_module::DECIDED;
        let mut found = EnvoyBuffer {
            ptr: std::ptr::null(),
            length: 0,
        };
        // SAFETY: the key points to a static string; `found` is a live buffer Envoy writes;
        // the filter pointer is this hook's.
        let set = unsafe {
            abi::envoy_dynamic_module_callback_http_get_filter_state_bytes(
                self.envoy,
                ModuleBuffer::of(key.as_bytes()),
                &mut found,
            )
        };
        if !set || found.ptr.is_null() || found.length != value.len() {
            return false;
        }
        // SAFETY: Envoy's bytes, valid for this hook (nothing sets the key meanwhile).
        unsafe { std::slice::from_raw_parts(found.ptr, found.length) == value.as_bytes() }
    }

    fn set_metadata(&mut self, namespace: &str, fields: &[u8]) -> bool {
        // SAFETY: both buffers point to live bytes for the call (Envoy parses them into its
        // own message); the filter pointer is this hook's.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_dynamic_metadata_struct(
                self.envoy,
                ModuleBuffer::of(namespace.as_bytes()),
                ModuleBuffer::of(fields),
            );
        }
        // Envoy says nothing back; the bytes are ours (a `Struct` that always parses) and a
        // request hook always has its stream's metadata.
        true
    }

    fn send_response(&mut self, status: u16, headers: &[(&str, &str)], body: &str) {
        let headers: Vec<ModuleHeader> = headers
            .iter()
            .map(|(n, v)| ModuleHeader::of(n, v))
            .collect();
        self.answered = true;
        // SAFETY: `headers` (and the strings its entries point to) and `body` live for the
        // call, and Envoy copies them; the filter pointer is this hook's. Envoy may finish the
        // stream inside this call: our `stream_complete` hook touches nothing.
        unsafe {
            abi::envoy_dynamic_module_callback_http_send_response(
                self.envoy,
                u32::from(status),
                headers.as_ptr(),
                headers.len(),
                ModuleBuffer::of(body.as_bytes()),
                ModuleBuffer::of(b"jwt_authz"),
            );
        }
    }

    fn callout(
        &mut self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Option<u64> {
        let headers: Vec<ModuleHeader> = headers
            .iter()
            .map(|(n, v)| ModuleHeader::of(n, v))
            .collect();
        let mut id: u64 = 0;
        // SAFETY: `id` is a live u64 Envoy writes; `headers`, the strings they point to and
        // `cluster` live for the call (Envoy copies them); the filter pointer is this hook's.
        let result = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_http_callout(
                self.envoy,
                &mut id,
                ModuleBuffer::of(cluster.as_bytes()),
                headers.as_ptr(),
                headers.len(),
                ModuleBuffer::of(b""),
                timeout.as_millis() as u64,
            )
        };
        (result == abi::CALLOUT_INIT_SUCCESS).then_some(id)
    }

    fn continue_request(&mut self) {
        // SAFETY: the filter pointer is this hook's (the callout-done hook of a request
        // this filter paused).
        unsafe { abi::envoy_dynamic_module_callback_http_filter_continue_decoding(self.envoy) }
    }

    fn worker(&self) -> u32 {
        // SAFETY: the filter pointer is this hook's.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_get_worker_index(self.envoy) }
    }

    fn count(&mut self, metric: Metric) {
        let index = Metric::ALL.iter().position(|m| *m == metric);
        if let Some(id) = index.and_then(|i| self.counters[i]) {
            // SAFETY: `id` was defined on the configuration this filter was made from, with
            // no labels; the filter pointer is this hook's.
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_increment_counter(
                    self.envoy,
                    id,
                    std::ptr::null(),
                    0,
                    1,
                );
            }
        }
    }
}

/// The module's filter behind `module`, with its configuration.
///
/// `None` for null, or for a guard's pointer.
///
/// # Safety
/// `module` must be a pointer `envoy_dynamic_module_on_http_filter_new` returned and not yet
/// destroyed, used on its worker during one hook (Envoy calls a filter's hooks one at a
/// time, on its worker, never re-entrantly except `stream_complete`, which does not come
/// here).
unsafe fn filter_of<'a>(
    module: FilterModulePtr,
) -> Option<(&'a mut ModuleFilter, Option<&'a ModuleConfig>)> {
    // SAFETY: by this function's contract, null or one of our pointers.
    if unsafe { kind_of(module) } != Some(FILTER) {
        return None;
    }
    // SAFETY: by this function's contract, a live `ModuleFilter` only this hook uses now.
    let filter = unsafe { &mut *(module as *mut ModuleFilter) };
    // SAFETY: null (a filter made without one) or the configuration, which outlives every
    // filter made from it (Envoy holds it for them).
    let config = unsafe { filter.config.as_ref() };
    Some((filter, config))
}

/// Runs `work` on the request's filter, catching a panic: counted, the filter poisoned, and
/// the request answered 503 (when `answers`: a hook of the request's side, where a local
/// reply can still be sent) unless it was answered already. A poisoned filter runs nothing
/// more; its request still unanswered gets the 503 at the first such hook.
///
/// # Safety
/// As for [`filter_of`]; `envoy` is the hook's filter pointer.
unsafe fn guarded<R: Copy>(
    envoy: FilterEnvoyPtr,
    module: FilterModulePtr,
    poisoned_answer: R,
    answers: bool,
    work: impl FnOnce(&mut Filter, &Config, &mut EnvoyStream<'_>) -> R,
) -> R {
    // SAFETY: the caller's contract.
    let Some((filter, config)) = (unsafe { filter_of(module) }) else {
        return poisoned_answer;
    };
    let no_counters = [None; Metric::ALL.len()];
    let counters = config.map_or(&no_counters, |c| &c.counters);
    let mut stream = EnvoyStream {
        envoy,
        counters,
        answered: false,
    };
    let run = match (filter.poisoned, config) {
        (false, Some(config)) => {
            let run = catch_unwind(AssertUnwindSafe(|| {
                work(&mut filter.filter, &config.config, &mut stream)
            }));
            if run.is_err() {
                filter.poisoned = true;
                stream.count(Metric::Panics);
                log(
                    abi::LOG_ERROR,
                    "jwt-authz module: a hook panicked; the request gets 503",
                );
            }
            run.ok()
        }
        _ => {
            filter.poisoned = true;
            None
        }
    };
    filter.answered |= stream.answered;
    match run {
        Some(answer) => answer,
        None => {
            if answers && !filter.answered {
                // A panic while answering (never expected) leaves the request paused.
                let _ = catch_unwind(AssertUnwindSafe(|| answer_503(&mut stream)));
                filter.answered |= stream.answered;
            }
            poisoned_answer
        }
    }
}

/// The 503 a request gets when a hook panicked.
fn answer_503(stream: &mut EnvoyStream<'_>) {
    apply(stream, Config::unavailable());
}

// ---- The hooks Envoy calls (all 20 it requires, and program init). ----

/// Called once when Envoy loads the library: our ABI version.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const std::ffi::c_char {
    abi::ABI_VERSION.as_ptr()
}

/// A filter configuration: `config` is the filter_config (the sidecar's YAML as a
/// `StringValue`). Null (Envoy refuses the configuration) when it does not read.
///
/// # Safety
/// Envoy passes buffers valid for the call and its own configuration pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: ConfigEnvoyPtr,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> ConfigModulePtr {
    // SAFETY: Envoy's buffer, valid for this call.
    let name = unsafe { owned(name.ptr, name.length) };
    // SAFETY: as for the name.
    let text = unsafe { owned(config.ptr, config.length) };
    if name == GUARD_FILTER {
        // SAFETY: Envoy's configuration pointer, inside config_new.
        return unsafe { guard_config_new(config_envoy, &text) };
    }
    let made = catch_unwind(AssertUnwindSafe(|| Config::new(&text)));
    let config = match made {
        Ok(Ok(config)) => config,
        Ok(Err(e)) => {
            log(
                abi::LOG_ERROR,
                &format!("jwt-authz module: invalid configuration: {e}"),
            );
            return std::ptr::null();
        }
        Err(_) => {
            log(
                abi::LOG_ERROR,
                "jwt-authz module: reading the configuration panicked",
            );
            return std::ptr::null();
        }
    };
    let mut counters = [None; Metric::ALL.len()];
    for (slot, metric) in counters.iter_mut().zip(Metric::ALL) {
        if !metric.guards() {
            // SAFETY: Envoy's configuration pointer, inside config_new.
            *slot = unsafe { define_counter(config_envoy, metric) };
        }
    }
    // SAFETY: inside config_new with Envoy's configuration pointer.
    let scheduler = unsafe {
        abi::envoy_dynamic_module_callback_http_filter_config_scheduler_new(config_envoy)
    };
    if scheduler.is_null() {
        log(
            abi::LOG_ERROR,
            "jwt-authz module: no configuration scheduler",
        );
        return std::ptr::null();
    }
    let interval = config.poll_interval();
    let ticker = match Ticker::start(Scheduler(scheduler), interval) {
        Ok(ticker) => ticker,
        Err(e) => {
            // SAFETY: made just above, never handed to a thread: deleted once, here.
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_config_scheduler_delete(scheduler)
            };
            log(
                abi::LOG_ERROR,
                &format!("jwt-authz module: cannot start the poll thread: {e}"),
            );
            return std::ptr::null();
        }
    };
    log(abi::LOG_INFO, "jwt-authz module: configuration loaded");
    Box::into_raw(Box::new(ModuleConfig {
        kind: FILTER,
        config,
        counters,
        ticker: Some(ticker),
        polling: Mutex::new(None),
        fetching: Mutex::new(None),
    })) as ConfigModulePtr
}

/// The guard's configuration (`filter_name: jwt_authz_guard`): it takes none, and refuses
/// one (a jwt-authz configuration given to the guard was meant for the filter: a chain with
/// two guards and no filter must not load).
///
/// # Safety
/// Envoy's configuration pointer, inside config_new.
unsafe fn guard_config_new(config_envoy: ConfigEnvoyPtr, text: &str) -> ConfigModulePtr {
    if !text.trim().is_empty() {
        log(
            abi::LOG_ERROR,
            "jwt-authz module: the guard (filter_name jwt_authz_guard) takes no filter_config",
        );
        return std::ptr::null();
    }
    let mut counters = [None; Metric::ALL.len()];
    for (slot, metric) in counters.iter_mut().zip(Metric::ALL) {
        if metric.guards() {
            // SAFETY: the caller's configuration pointer, inside config_new.
            *slot = unsafe { define_counter(config_envoy, metric) };
        }
    }
    Box::into_raw(Box::new(GuardConfig {
        kind: GUARD,
        counters,
    })) as ConfigModulePtr
}

/// Defines `metric`'s counter on a configuration: its id, `None` if Envoy refused it.
///
/// # Safety
/// Envoy's configuration pointer, inside config_new.
unsafe fn define_counter(config_envoy: ConfigEnvoyPtr, metric: Metric) -> Option<usize> {
    let mut id = 0usize;
    // SAFETY: inside config_new with Envoy's configuration pointer, as the ABI requires; the
    // name lives for the call, no labels, `id` is a live usize.
    let result = unsafe {
        abi::envoy_dynamic_module_callback_http_filter_config_define_counter(
            config_envoy,
            ModuleBuffer::of(metric.name().as_bytes()),
            std::ptr::null(),
            0,
            &mut id,
        )
    };
    (result == abi::METRICS_SUCCESS).then_some(id)
}

/// # Safety
/// `config` is a pointer `config_new` returned, destroyed once, after its filters.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(
    config: ConfigModulePtr,
) {
    // SAFETY: null or one of our configurations.
    match unsafe { kind_of(config) } {
        Some(FILTER) => {}
        Some(GUARD) => {
            // SAFETY: made by `Box::into_raw` in guard_config_new, destroyed once; no
            // filter made from it is left (each was this same pointer, and is gone).
            drop(unsafe { Box::from_raw(config as *mut GuardConfig) });
            return;
        }
        _ => return,
    }
    // SAFETY: made by `Box::into_raw` in config_new, and Envoy destroys it once.
    let mut config = unsafe { Box::from_raw(config as *mut ModuleConfig) };
    if let Some(scheduler) = config.ticker.take().and_then(Ticker::stop) {
        // SAFETY: the timer thread has returned it: nothing else holds it; deleted once.
        unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_scheduler_delete(scheduler.0)
        };
    }
    drop(config);
}

impl ModuleConfig {
    /// Counts `metric` from a configuration hook (main thread).
    fn count(&self, config_envoy: ConfigEnvoyPtr, metric: Metric) {
        let index = Metric::ALL.iter().position(|m| *m == metric);
        if let Some(id) = index.and_then(|i| self.counters[i]) {
            // SAFETY: `id` was defined on this configuration, with no labels; Envoy's
            // configuration pointer, on the main thread.
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_config_increment_counter(
                    config_envoy,
                    id,
                    std::ptr::null(),
                    0,
                    1,
                );
            }
        }
    }
}

/// The configuration's own view from a configuration hook.
///
/// # Safety
/// `config` is null or a live pointer `config_new` returned (Envoy calls configuration
/// hooks on its main thread, before `config_destroy`).
unsafe fn config_of<'a>(config: ConfigModulePtr) -> Option<&'a ModuleConfig> {
    // SAFETY: by this function's contract: null or one of our configurations; only the
    // filter's is a `ModuleConfig` (the guard's has no configuration hooks to run).
    if unsafe { kind_of(config) } != Some(FILTER) {
        return None;
    }
    // SAFETY: by this function's contract, and a `ModuleConfig` by its kind.
    unsafe { (config as *const ModuleConfig).as_ref() }
}

/// A GET from the configuration on the main thread (`call`'s cluster and path); its id.
fn config_callout(
    config_envoy: ConfigEnvoyPtr,
    call: &jwt_authz_module::PollCall<'_>,
) -> Option<u64> {
    let headers = [
        ModuleHeader::of(":method", "GET"),
        ModuleHeader::of(":path", &call.path),
        ModuleHeader::of(":authority", "jwt-authz"),
    ];
    let mut id = 0u64;
    // SAFETY: called from a configuration hook on the main thread with Envoy's configuration
    // pointer; `id`, `headers`, the strings they point to and the cluster name live for the
    // call (Envoy copies them).
    let result = unsafe {
        abi::envoy_dynamic_module_callback_http_filter_config_http_callout(
            config_envoy,
            &mut id,
            ModuleBuffer::of(call.cluster.as_bytes()),
            headers.as_ptr(),
            headers.len(),
            ModuleBuffer::of(b""),
            call.timeout.as_millis() as u64,
        )
    };
    (result == abi::CALLOUT_INIT_SUCCESS).then_some(id)
}

/// Fetches the sidecar's published keys when the polled generation is not theirs.
fn fetch_keys(config_envoy: ConfigEnvoyPtr, module: &ModuleConfig) {
    let Some(call) = module.config.keys_call() else {
        return;
    };
    match config_callout(config_envoy, &call) {
        Some(id) => *module.fetching.lock().unwrap_or_else(|p| p.into_inner()) = Some(id),
        None => {
            module.config.keys_done(None);
        }
    }
}

/// The timer's wake-up on the main thread: the poll of the sidecar's generation, when due.
///
/// # Safety
/// Envoy's configuration pointer and ours, on the main thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    config_envoy: ConfigEnvoyPtr,
    config: ConfigModulePtr,
    event_id: u64,
) {
    // SAFETY: the hook's own pointer.
    let Some(module) = (unsafe { config_of(config) }) else {
        return;
    };
    if event_id != POLL_EVENT {
        return;
    }
    let run = catch_unwind(AssertUnwindSafe(|| {
        if let Some(call) = module.config.poll_call() {
            match config_callout(config_envoy, &call) {
                Some(id) => *module.polling.lock().unwrap_or_else(|p| p.into_inner()) = Some(id),
                None => {
                    module.config.poll_done(None, now_ms());
                    module.count(config_envoy, Metric::PollFailures);
                    log(
                        abi::LOG_WARN,
                        "jwt-authz module: cannot poll the sidecar (is in_proxy.cluster an Envoy cluster?)",
                    );
                }
            }
        }
        // Keys a fetch failed to bring are asked for again at each tick.
        fetch_keys(config_envoy, module);
    }));
    if run.is_err() {
        log(abi::LOG_ERROR, "jwt-authz module: the poll panicked");
    }
}

/// The sidecar's answer to the poll.
///
/// # Safety
/// Envoy's configuration pointer and ours, on the main thread; `headers` and `body_chunks`
/// valid for the call with the given lengths (or null).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    config_envoy: ConfigEnvoyPtr,
    config: ConfigModulePtr,
    callout_id: u64,
    result: u32,
    headers: *const EnvoyHeader,
    headers_size: usize,
    body_chunks: *const EnvoyBuffer,
    body_chunks_size: usize,
) {
    // SAFETY: the hook's own pointer.
    let Some(module) = (unsafe { config_of(config) }) else {
        return;
    };
    // SAFETY: the hook's own arguments, valid for this call.
    let answer =
        unsafe { callout_answer(result, headers, headers_size, body_chunks, body_chunks_size) };
    let run = catch_unwind(AssertUnwindSafe(|| {
        let answer = answer.as_ref().map(|(s, body)| (*s, body.as_slice()));
        let mut fetching = module.fetching.lock().unwrap_or_else(|p| p.into_inner());
        if *fetching == Some(callout_id) {
            *fetching = None;
            drop(fetching);
            if !module.config.keys_done(answer) {
                module.count(config_envoy, Metric::PollFailures);
                log(
                    abi::LOG_WARN,
                    "jwt-authz module: the sidecar did not publish its keys",
                );
            }
            return;
        }
        drop(fetching);
        let mut polling = module.polling.lock().unwrap_or_else(|p| p.into_inner());
        if *polling != Some(callout_id) {
            return;
        }
        *polling = None;
        drop(polling);
        if !module.config.poll_done(answer, now_ms()) {
            module.count(config_envoy, Metric::PollFailures);
            log(
                abi::LOG_WARN,
                "jwt-authz module: the sidecar did not answer the generation poll",
            );
        }
        // A new generation: its keys.
        fetch_keys(config_envoy, module);
    }));
    if run.is_err() {
        log(
            abi::LOG_ERROR,
            "jwt-authz module: the poll's answer panicked",
        );
    }
}

// Streamed callouts from the configuration are not used; Envoy requires these hooks with the
// configuration's callouts.

/// # Safety
/// Nothing is dereferenced.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_headers(
    _config_envoy: ConfigEnvoyPtr,
    _config: ConfigModulePtr,
    _stream_id: u64,
    _headers: *const EnvoyHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

/// # Safety
/// Nothing is dereferenced.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_data(
    _config_envoy: ConfigEnvoyPtr,
    _config: ConfigModulePtr,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

/// # Safety
/// Nothing is dereferenced.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_trailers(
    _config_envoy: ConfigEnvoyPtr,
    _config: ConfigModulePtr,
    _stream_id: u64,
    _trailers: *const EnvoyHeader,
    _trailers_size: usize,
) {
}

/// # Safety
/// Nothing is dereferenced.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_complete(
    _config_envoy: ConfigEnvoyPtr,
    _config: ConfigModulePtr,
    _stream_id: u64,
) {
}

/// # Safety
/// Nothing is dereferenced.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_reset(
    _config_envoy: ConfigEnvoyPtr,
    _config: ConfigModulePtr,
    _stream_id: u64,
    _reason: u32,
) {
}

/// # Safety
/// `config` is a live pointer `config_new` returned.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: ConfigModulePtr,
    _envoy: FilterEnvoyPtr,
) -> FilterModulePtr {
    // SAFETY: null or one of our configurations, alive while Envoy makes filters of it.
    let kind = unsafe { kind_of(config) };
    if kind == Some(GUARD) {
        // The guard's filters are its configuration: nothing per request.
        return config as FilterModulePtr;
    }
    let filter = ModuleFilter {
        kind: FILTER,
        config: if kind == Some(FILTER) {
            config as *const ModuleConfig
        } else {
            std::ptr::null()
        },
        filter: Filter::default(),
        // A filter without a configuration (never expected) decides nothing: its request
        // gets a 503 at its first hook.
        poisoned: kind != Some(FILTER),
        answered: false,
    };
    Box::into_raw(Box::new(filter)) as FilterModulePtr
}

/// # Safety
/// `module` is a pointer `filter_new` returned; Envoy destroys it once, after its last hook.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(module: FilterModulePtr) {
    // SAFETY: null or one of our pointers; a guard's is its configuration, not ours to free.
    if unsafe { kind_of(module) } == Some(FILTER) {
        // SAFETY: made by `Box::into_raw` in filter_new, destroyed once.
        drop(unsafe { Box::from_raw(module as *mut ModuleFilter) });
    }
}

/// The guard behind `module`, if it is one.
///
/// # Safety
/// `module` null or a live pointer `filter_new` returned.
unsafe fn guard_of<'a>(module: FilterModulePtr) -> Option<&'a GuardConfig> {
    // SAFETY: by this function's contract.
    if unsafe { kind_of(module) } != Some(GUARD) {
        return None;
    }
    // SAFETY: a guard's filter pointer is its configuration, which Envoy keeps alive until
    // its filters are gone; shared and read-only (counters go through Envoy).
    unsafe { (module as *const GuardConfig).as_ref() }
}

/// The guard's request-headers hook ([`guard`]), a panic answered 503 (never expected).
fn guard_request(envoy: FilterEnvoyPtr, guard_config: &GuardConfig) -> u32 {
    let mut stream = EnvoyStream {
        envoy,
        counters: &guard_config.counters,
        answered: false,
    };
    match catch_unwind(AssertUnwindSafe(|| guard(&mut stream))) {
        Ok(Flow::Continue) => abi::HEADERS_CONTINUE,
        Ok(Flow::Stop) => abi::HEADERS_STOP_ITERATION,
        Err(_) => {
            log(
                abi::LOG_ERROR,
                "jwt-authz module: the guard panicked; the request gets 503",
            );
            if !stream.answered {
                let _ = catch_unwind(AssertUnwindSafe(|| answer_503(&mut stream)));
            }
            abi::HEADERS_STOP_ITERATION
        }
    }
}

/// # Safety
/// Envoy's filter pointer and our filter, on its worker.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    envoy: FilterEnvoyPtr,
    module: FilterModulePtr,
    _end_of_stream: bool,
) -> u32 {
    // SAFETY: the hook's own pointer.
    if let Some(guard_config) = unsafe { guard_of(module) } {
        return guard_request(envoy, guard_config);
    }
    // SAFETY: the hook's own pointers.
    unsafe {
        guarded(
            envoy,
            module,
            abi::HEADERS_STOP_ITERATION,
            true,
            |filter, config, stream| {
                #[cfg(feature = "panic-probe")]
                if stream
                    .request_headers()
                    .iter()
                    .any(|(n, _)| *n == b"x-jwt-authz-panic-probe")
                {
                    panic!("panic probe");
                }
                match filter.on_request_headers(config, stream) {
                    Flow::Continue => abi::HEADERS_CONTINUE,
                    Flow::Stop => abi::HEADERS_STOP_ITERATION,
                }
            },
        )
    }
}

/// While a callout is in flight the body waits, buffered under Envoy's flow control (the
/// watermark: a large upload is paused, not refused), as the headers do.
///
/// # Safety
/// Envoy's filter pointer and our filter, on its worker.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    envoy: FilterEnvoyPtr,
    module: FilterModulePtr,
    _end_of_stream: bool,
) -> u32 {
    // SAFETY: the hook's own pointer. The guard decided at the headers.
    if unsafe { guard_of(module) }.is_some() {
        return abi::BODY_CONTINUE;
    }
    // SAFETY: the hook's own pointers.
    unsafe {
        guarded(
            envoy,
            module,
            abi::BODY_STOP_AND_WATERMARK,
            true,
            |filter, _, _| {
                if filter.pending() {
                    abi::BODY_STOP_AND_WATERMARK
                } else {
                    abi::BODY_CONTINUE
                }
            },
        )
    }
}

/// # Safety
/// Envoy's filter pointer and our filter, on its worker.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    envoy: FilterEnvoyPtr,
    module: FilterModulePtr,
) -> u32 {
    // SAFETY: the hook's own pointer. The guard decided at the headers.
    if unsafe { guard_of(module) }.is_some() {
        return abi::HEADERS_CONTINUE;
    }
    // SAFETY: the hook's own pointers.
    unsafe {
        guarded(
            envoy,
            module,
            abi::HEADERS_STOP_ITERATION,
            true,
            |filter, _, _| {
                if filter.pending() {
                    abi::HEADERS_STOP_ITERATION
                } else {
                    abi::HEADERS_CONTINUE
                }
            },
        )
    }
}

/// The sidecar's answer to a callout (or its failure: `result` other than success).
///
/// # Safety
/// Envoy's filter pointer and our filter, on its worker; `headers` and `body_chunks` valid
/// for the call with the given lengths (or null).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    envoy: FilterEnvoyPtr,
    module: FilterModulePtr,
    callout_id: u64,
    result: u32,
    headers: *const EnvoyHeader,
    headers_size: usize,
    body_chunks: *const EnvoyBuffer,
    body_chunks_size: usize,
) {
    // SAFETY: the hook's own arguments, valid for this call.
    let answer =
        unsafe { callout_answer(result, headers, headers_size, body_chunks, body_chunks_size) };
    let answer = answer.as_ref().map(|(s, body)| (*s, body.as_slice()));
    // SAFETY: the hook's own pointers.
    unsafe {
        guarded(envoy, module, (), true, |filter, config, stream| {
            filter.on_callout_done(config, stream, callout_id, answer)
        });
    }
}

/// A callout's answer, copied: its `:status` and body; `None` when it failed.
///
/// # Safety
/// `headers` and `body_chunks` null or valid for the given lengths during the call, each
/// entry's bytes too (what Envoy passes to a callout-done hook).
unsafe fn callout_answer(
    result: u32,
    headers: *const EnvoyHeader,
    headers_size: usize,
    body_chunks: *const EnvoyBuffer,
    body_chunks_size: usize,
) -> Option<(u16, Vec<u8>)> {
    if result != abi::CALLOUT_SUCCESS || headers.is_null() {
        return None;
    }
    // SAFETY: Envoy passes `headers_size` entries, valid for this call.
    let headers = unsafe { std::slice::from_raw_parts(headers, headers_size) };
    let mut status = None;
    for h in headers {
        // SAFETY: each entry's bytes are valid for this call.
        let key = unsafe { owned(h.key_ptr, h.key_length) };
        if key == ":status" {
            // SAFETY: as for the key.
            status = unsafe { owned(h.value_ptr, h.value_length) }.parse().ok();
        }
    }
    let mut body: Vec<u8> = Vec::new();
    if !body_chunks.is_null() {
        // SAFETY: Envoy passes `body_chunks_size` chunks, valid for this call.
        let chunks = unsafe { std::slice::from_raw_parts(body_chunks, body_chunks_size) };
        for chunk in chunks {
            if chunk.ptr.is_null() || chunk.length == 0 {
                continue;
            }
            // Bounded: the logic refuses an answer beyond this; no need to copy more.
            if body.len() > jwt_authz_module::MAX_ANSWER_BYTES {
                break;
            }
            // SAFETY: a non-null chunk valid for `length` bytes during this call.
            body.extend_from_slice(unsafe { std::slice::from_raw_parts(chunk.ptr, chunk.length) });
        }
    }
    Some((status?, body))
}

/// Responses pass untouched.
///
/// # Safety
/// Nothing is dereferenced.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    _envoy: FilterEnvoyPtr,
    _module: FilterModulePtr,
    _end_of_stream: bool,
) -> u32 {
    abi::HEADERS_CONTINUE
}

/// # Safety
/// Nothing is dereferenced.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _envoy: FilterEnvoyPtr,
    _module: FilterModulePtr,
    _end_of_stream: bool,
) -> u32 {
    abi::BODY_CONTINUE
}

/// # Safety
/// Nothing is dereferenced.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _envoy: FilterEnvoyPtr,
    _module: FilterModulePtr,
) -> u32 {
    abi::HEADERS_CONTINUE
}

/// May run inside another of this filter's hooks (a local reply ends the stream): touches
/// nothing.
///
/// # Safety
/// Nothing is dereferenced.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _envoy: FilterEnvoyPtr,
    _module: FilterModulePtr,
) {
}

// Streamed callouts, the scheduler and watermarks are not used; Envoy requires the hooks.

/// # Safety
/// Nothing is dereferenced.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _envoy: FilterEnvoyPtr,
    _module: FilterModulePtr,
    _stream_id: u64,
    _headers: *const EnvoyHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

/// # Safety
/// Nothing is dereferenced.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _envoy: FilterEnvoyPtr,
    _module: FilterModulePtr,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

/// # Safety
/// Nothing is dereferenced.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _envoy: FilterEnvoyPtr,
    _module: FilterModulePtr,
    _stream_id: u64,
    _trailers: *const EnvoyHeader,
    _trailers_size: usize,
) {
}

/// # Safety
/// Nothing is dereferenced.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _envoy: FilterEnvoyPtr,
    _module: FilterModulePtr,
    _stream_id: u64,
) {
}

/// # Safety
/// Nothing is dereferenced.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _envoy: FilterEnvoyPtr,
    _module: FilterModulePtr,
    _stream_id: u64,
    _reason: u32,
) {
}

/// # Safety
/// Nothing is dereferenced.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _envoy: FilterEnvoyPtr,
    _module: FilterModulePtr,
    _event_id: u64,
) {
}

/// # Safety
/// Nothing is dereferenced.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _envoy: FilterEnvoyPtr,
    _module: FilterModulePtr,
) {
}

/// # Safety
/// Nothing is dereferenced.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _envoy: FilterEnvoyPtr,
    _module: FilterModulePtr,
) {
}

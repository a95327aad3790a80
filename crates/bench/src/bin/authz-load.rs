//! A load generator for `envoy.service.auth.v3.Authorization/Check`, on tonic: a fixed
//! number of HTTP/2 connections and in-flight requests, a warm-up, then a measured period.
//! Prints one JSON object: throughput, latency percentiles, allowed/denied/error counts.
//!
//! Token modes: `--tokens FILE` cycles through the file's tokens, `--no-token` sends none,
//! `--mint-ed25519 KEY` signs a new unique token for every request (the cache flood).
//! `--dpop-key KEY --tokens FILE` sends the file's first token as `Authorization: DPoP` with
//! a proof of its own for every request, `--proofs` of them made (ES256) before connecting.
//! `--traceparent VALUE` adds that header to every request (fixed tokens only).
//! `--rate N` paces the requests (N a second over all in-flight slots) instead of sending
//! the next as soon as one is answered: the latency of a steady load, not of a saturating
//! one. `--http URL` sends `GET URL` with the token as a bearer token (through a proxy)
//! instead of a gRPC Check.
//! `--verify-cost JWKS TOKENS` instead times raw aws-lc RS256 verification (pre-parsed key)
//! on this thread, the yardstick for "limited by RSA verification itself".

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::Ed25519KeyPair;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use hdrhistogram::Histogram;
use jwt_authz_bench::{
    check_request, check_request_dpop, claims, dpop_proof, set_header, sign_ed25519,
};
use tonic::transport::{Channel, Endpoint};

#[derive(Parser)]
struct Cli {
    /// host:port of the ext_authz server.
    #[arg(long, default_value = "127.0.0.1:9001")]
    target: String,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    duration: Duration,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    warmup: Duration,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the requests are spread over.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Stop after this many measured requests instead of after --duration.
    #[arg(long)]
    requests: Option<u64>,
    #[arg(long, conflicts_with_all = ["no_token", "mint_ed25519"])]
    tokens: Option<PathBuf>,
    #[arg(long)]
    no_token: bool,
    #[arg(long)]
    mint_ed25519: Option<PathBuf>,
    /// A DPoP key (P-256 PKCS#8) the `--tokens` token is bound to.
    #[arg(long, requires = "tokens")]
    dpop_key: Option<PathBuf>,
    /// Proofs made up front for `--dpop-key`: more than the run sends, or the rest are
    /// replays (and denied).
    #[arg(long, default_value_t = 300_000)]
    proofs: u64,
    /// Every request carries this W3C `traceparent` (as from a proxy that traces).
    #[arg(long)]
    traceparent: Option<String>,
    /// Requests a second over all in-flight slots (default: as fast as they are answered).
    #[arg(long)]
    rate: Option<f64>,
    /// Send `GET URL` with `Authorization: Bearer <token>` instead of a gRPC Check.
    #[arg(long, conflicts_with_all = ["dpop_key", "traceparent"])]
    http: Option<String>,
    /// Time raw RS256 verification: JWKS file, then tokens file.
    #[arg(long, num_args = 2, value_names = ["JWKS", "TOKENS"])]
    verify_cost: Option<Vec<PathBuf>>,
}

enum Source {
    Fixed(Vec<CheckRequest>),
    Mint(Ed25519KeyPair),
}

impl Source {
    fn next(&self, n: u64) -> CheckRequest {
        match self {
            Source::Fixed(requests) => requests[(n % requests.len() as u64) as usize].clone(),
            Source::Mint(key) => check_request(Some(&sign_ed25519(key, &claims(n)))),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    if let Some(files) = &cli.verify_cost {
        return verify_cost(&files[0], &files[1]);
    }
    let source = if let (Some(key), Some(tokens)) = (&cli.dpop_key, &cli.tokens) {
        let der = std::fs::read(key)?;
        let key = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &der,
        )
        .map_err(|_| "bad P-256 key")?;
        let text = std::fs::read_to_string(tokens)?;
        let token = text.lines().next().ok_or("no token in the file")?;
        Source::Fixed(
            (0..cli.proofs)
                .map(|n| check_request_dpop(token, &dpop_proof(&key, token, n)))
                .collect(),
        )
    } else if let Some(path) = &cli.tokens {
        let text = std::fs::read_to_string(path)?;
        let requests: Vec<_> = text
            .lines()
            .filter(|l| !l.is_empty())
            .map(|t| check_request(Some(t)))
            .collect();
        if requests.is_empty() {
            return Err("no tokens in the file".into());
        }
        Source::Fixed(requests)
    } else if let Some(path) = &cli.mint_ed25519 {
        let der = std::fs::read(path)?;
        Source::Mint(Ed25519KeyPair::from_pkcs8(&der).map_err(|_| "bad Ed25519 key")?)
    } else if cli.no_token {
        Source::Fixed(vec![check_request(None)])
    } else {
        return Err("choose --tokens, --no-token or --mint-ed25519".into());
    };
    let source = match (&cli.traceparent, source) {
        (Some(context), Source::Fixed(requests)) => Source::Fixed(
            requests
                .into_iter()
                .map(|mut request| {
                    set_header(&mut request, "traceparent", context.clone());
                    request
                })
                .collect(),
        ),
        (Some(_), Source::Mint(_)) => return Err("--traceparent needs fixed tokens".into()),
        (None, source) => source,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(cli, Arc::new(source)))?;
    println!("{report}");
    Ok(())
}

async fn run(
    cli: Cli,
    source: Arc<Source>,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let mut channels = Vec::new();
    let http = match &cli.http {
        Some(url) => Some((
            reqwest::Client::builder()
                .pool_max_idle_per_host(cli.concurrency)
                .tcp_nodelay(true)
                .build()?,
            url.clone(),
        )),
        None => None,
    };
    for _ in 0..if http.is_some() {
        0
    } else {
        cli.connections.max(1)
    } {
        let channel: Channel = Endpoint::from_shared(format!("http://{}", cli.target))?
            .tcp_nodelay(true)
            .connect()
            .await?;
        channels.push(channel);
    }
    let counter = Arc::new(AtomicU64::new(0));
    let measured = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let measure_from = started + cli.warmup;
    let deadline = cli.requests.map_or(measure_from + cli.duration, |_| {
        measure_from + Duration::from_secs(3600)
    });
    let limit = cli.requests;
    let slots = cli.concurrency.max(1);
    // Each slot sends one request every `slots / rate` seconds, the slots staggered.
    let interval = cli
        .rate
        .map(|rate| Duration::from_secs_f64(slots as f64 / rate.max(1e-3)));
    let mut tasks = Vec::new();
    for i in 0..slots {
        let mut client = match &http {
            Some((client, url)) => Client::Http(client.clone(), url.clone()),
            None => Client::Grpc(AuthorizationClient::new(
                channels[i % channels.len()].clone(),
            )),
        };
        let mut next = interval.map(|every| started + every.mul_f64(i as f64 / slots as f64));
        let source = Arc::clone(&source);
        let counter = Arc::clone(&counter);
        let measured = Arc::clone(&measured);
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let (mut ok, mut denied, mut errors) = (0u64, 0u64, 0u64);
            loop {
                if let (Some(at), Some(every)) = (next, interval) {
                    tokio::time::sleep_until(at.into()).await;
                    next = Some(at + every);
                }
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                if let Some(limit) = limit
                    && measured.load(Ordering::Relaxed) >= limit
                {
                    break;
                }
                let request = source.next(counter.fetch_add(1, Ordering::Relaxed));
                let result = client.send(request).await;
                let recording = now >= measure_from;
                if !recording {
                    continue;
                }
                measured.fetch_add(1, Ordering::Relaxed);
                let micros = now.elapsed().as_micros().max(1) as u64;
                let _ = hist.record(micros.min(60_000_000));
                match result {
                    Ok(true) => ok += 1,
                    Ok(false) => denied += 1,
                    Err(()) => errors += 1,
                }
            }
            (hist, ok, denied, errors)
        }));
    }
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut ok, mut denied, mut errors) = (0, 0, 0);
    for task in tasks {
        let (h, o, d, e) = task.await?;
        total.add(h)?;
        ok += o;
        denied += d;
        errors += e;
    }
    let elapsed = Instant::now()
        .min(deadline)
        .saturating_duration_since(measure_from)
        .as_secs_f64();
    let requests = ok + denied + errors;
    Ok(serde_json::json!({
        "requests": requests,
        "total": counter.load(Ordering::Relaxed),
        "seconds": elapsed,
        "rps": requests as f64 / elapsed.max(1e-9),
        "p50_us": total.value_at_quantile(0.50),
        "p99_us": total.value_at_quantile(0.99),
        "p999_us": total.value_at_quantile(0.999),
        "ok": ok,
        "denied": denied,
        "errors": errors,
        "concurrency": cli.concurrency,
        "rate": cli.rate,
        "connections": cli.connections,
    }))
}

enum Client {
    Grpc(AuthorizationClient<Channel>),
    Http(reqwest::Client, String),
}

impl Client {
    /// Sends one request; whether it was allowed (`Err` for a transport failure).
    async fn send(&mut self, request: CheckRequest) -> Result<bool, ()> {
        match self {
            Client::Grpc(client) => {
                let response = client.check(request).await.map_err(|_| ())?;
                Ok(response
                    .get_ref()
                    .status
                    .as_ref()
                    .is_some_and(|s| s.code == 0))
            }
            Client::Http(client, url) => {
                let token = request
                    .attributes
                    .and_then(|a| a.request)
                    .and_then(|r| r.http)
                    .and_then(|h| h.headers.get("authorization").cloned());
                let mut get = client.get(url.as_str());
                if let Some(token) = token {
                    get = get.header("authorization", token);
                }
                let response = get.send().await.map_err(|_| ())?;
                let allowed = response.status().is_success();
                response.bytes().await.map_err(|_| ())?;
                Ok(allowed)
            }
        }
    }
}

fn verify_cost(jwks: &PathBuf, tokens: &PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(jwks)?)?;
    let key = doc["keys"]
        .as_array()
        .and_then(|k| k.iter().find(|k| k["kty"] == "RSA"))
        .ok_or("no RSA key")?;
    let decode = |s: &serde_json::Value| URL_SAFE_NO_PAD.decode(s.as_str().unwrap_or_default());
    let public = aws_lc_rs::signature::RsaPublicKeyComponents {
        n: decode(&key["n"])?,
        e: decode(&key["e"])?,
    };
    let der = aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(&public)
        .map_err(|_| "encode key")?;
    let parsed = aws_lc_rs::signature::ParsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        der.as_ref(),
    )
    .map_err(|_| "parse key")?;
    let text = std::fs::read_to_string(tokens)?;
    let parsed_tokens: Vec<(String, Vec<u8>)> = text
        .lines()
        .take(1000)
        .filter_map(|t| {
            let (input, sig) = t.rsplit_once('.')?;
            Some((input.to_owned(), URL_SAFE_NO_PAD.decode(sig).ok()?))
        })
        .collect();
    let rounds = 20_000;
    let start = Instant::now();
    for i in 0..rounds {
        let (input, sig) = &parsed_tokens[i % parsed_tokens.len()];
        parsed
            .verify_sig(input.as_bytes(), sig)
            .map_err(|_| "verify failed")?;
    }
    let per = start.elapsed().as_secs_f64() / rounds as f64;
    println!(
        "{}",
        serde_json::json!({"rs256_verify_us": per * 1e6, "rounds": rounds})
    );
    Ok(())
}

//! Writes the benchmark key material and tokens into a directory:
//! `jwks.json` (an RSA and an Ed25519 public key), `tokens-rs256.txt` (N RS256 tokens, one
//! per line), `bad-signature.txt` (one RS256 token with a broken signature) and
//! `ed25519.pk8` (the Ed25519 private key, for minting unique tokens during the flood),
//! `dpop-p256.pk8` (a client's DPoP key) and `dpop-token.txt` (an RS256 token bound to it,
//! `cnf.jkt`), for `authz-load --dpop-key`. With `--status-uri`, also `status-token.txt` (an
//! RS256 token whose `status` names entry 3 of the list at that URI) and `status-list.jwt`
//! (that list: 1,024 one-bit entries, entry 7 revoked, signed by the RSA key).

use std::path::PathBuf;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{Ed25519KeyPair, RsaKeyPair};
use clap::Parser;
use jwt_authz_bench::*;

#[derive(Parser)]
struct Cli {
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 10_000)]
    rs256: u64,
    /// Write a token with a Token Status List reference to this URI, and the list.
    #[arg(long)]
    status_uri: Option<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    std::fs::create_dir_all(&cli.out)?;
    let rsa = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).map_err(|_| "RSA keygen")?;
    let ed_doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
        .map_err(|_| "Ed25519 keygen")?;
    let ed = Ed25519KeyPair::from_pkcs8(ed_doc.as_ref()).map_err(|_| "Ed25519 key")?;
    std::fs::write(cli.out.join("ed25519.pk8"), ed_doc.as_ref())?;
    let _ = rsa.as_der();
    let jwks = serde_json::json!({"keys": [rsa_jwk(&rsa), ed_jwk(&ed)]});
    std::fs::write(cli.out.join("jwks.json"), jwks.to_string())?;

    // Sign on every core: RSA signing is the slow part of preparing a run.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let rsa = std::sync::Arc::new(rsa);
    let chunks: Vec<Vec<String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let rsa = std::sync::Arc::clone(&rsa);
                let count = cli.rs256;
                scope.spawn(move || {
                    (t..count)
                        .step_by(threads as usize)
                        .map(|n| sign_rs256(&rsa, &claims(n)))
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let tokens: Vec<String> = chunks.into_iter().flatten().collect();
    std::fs::write(cli.out.join("tokens-rs256.txt"), tokens.join("\n") + "\n")?;
    let mut bad = tokens.first().cloned().ok_or("no tokens")?;
    let last = bad.pop().ok_or("empty token")?;
    bad.push(if last == 'A' { 'B' } else { 'A' });
    std::fs::write(cli.out.join("bad-signature.txt"), bad + "\n")?;

    let dpop_doc = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .map_err(|_| "P-256 keygen")?;
    let dpop = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        dpop_doc.as_ref(),
    )
    .map_err(|_| "P-256 key")?;
    std::fs::write(cli.out.join("dpop-p256.pk8"), dpop_doc.as_ref())?;
    let mut bound = claims(0);
    bound["cnf"] = serde_json::json!({"jkt": dpop_jkt(&dpop)});
    std::fs::write(
        cli.out.join("dpop-token.txt"),
        sign_rs256(&rsa, &bound) + "\n",
    )?;
    if let Some(uri) = &cli.status_uri {
        let mut referencing = claims(0);
        referencing["status"] = serde_json::json!({"status_list": {"idx": 3, "uri": uri}});
        std::fs::write(
            cli.out.join("status-token.txt"),
            sign_rs256(&rsa, &referencing) + "\n",
        )?;
        let mut list = jwt_authz_jose::status_list::StatusList::new(1, 1024)?;
        list.set(7, 1)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let list_claims = serde_json::json!({
            "sub": uri, "iss": ISSUER, "iat": now, "exp": now + 3 * 3600, "ttl": 3600,
            "status_list": list.encode(),
        });
        std::fs::write(
            cli.out.join("status-list.jwt"),
            sign_rs256_typed(&rsa, jwt_authz_jose::status_list::TOKEN_TYPE, &list_claims),
        )?;
    }
    println!(
        "wrote {} RS256 tokens to {}",
        tokens.len(),
        cli.out.display()
    );
    Ok(())
}

//! `probe --setup`: creating the scenario's teams and keys in the gateway under probe.
//!
//! Owns: sending the LiteLLM admin calls [`crate::emit::litellm_admin_calls`] lists (teams
//! first, then keys) with the master key, after deleting any earlier copies so a second run
//! starts from the same state, and turning a refusal into the gateway's own words. Does not
//! decide what the calls contain (`emit`).

use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use switchback::transport::{Connector, TcpConnector};

use super::GatewayUrl;
use crate::emit::{AdminCall, litellm_admin_calls};
use crate::scenario::Scenario;

/// Longest wait for one admin call.
pub const ADMIN_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest admin answer read.
pub const MAX_ADMIN_BODY_BYTES: usize = 1024 * 1024;
/// How much of a refusal the error quotes.
const QUOTED_BYTES: usize = 600;

/// Sends one admin call; `Ok(status, body)` for any HTTP answer.
async fn post(
    gateway: &GatewayUrl,
    master_key: &str,
    path: &str,
    body: &Value,
) -> Result<(u16, String), String> {
    let exchange = async {
        let io = TcpConnector
            .connect(&gateway.host, gateway.port)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(io))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        let request = Request::post(path)
            .header(header::HOST, format!("{}:{}", gateway.host, gateway.port))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {master_key}"))
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| format!("request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = response.status().as_u16();
        let bytes = http_body_util::Limited::new(response.into_body(), MAX_ADMIN_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        conn.abort();
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    };
    tokio::time::timeout(ADMIN_CALL_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {} s", ADMIN_CALL_TIMEOUT.as_secs()))?
}

fn quote(body: &str) -> String {
    let mut end = body.len().min(QUOTED_BYTES);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    let cut = if end < body.len() { " ..." } else { "" };
    format!("{}{cut}", body[..end].trim())
}

/// The calls that remove earlier copies of the scenario's keys, then teams (answers ignored:
/// most say "not found").
fn cleanup_calls(calls: &[AdminCall]) -> Vec<(&'static str, Value)> {
    let keys: Vec<&Value> = calls
        .iter()
        .filter(|c| c.path == "/key/generate")
        .filter_map(|c| c.body.get("key"))
        .collect();
    let teams: Vec<&Value> = calls
        .iter()
        .filter(|c| c.path == "/team/new")
        .filter_map(|c| c.body.get("team_id"))
        .collect();
    let mut out = Vec::new();
    if !keys.is_empty() {
        out.push(("/key/delete", json!({ "keys": keys })));
    }
    if !teams.is_empty() {
        out.push(("/team/delete", json!({ "team_ids": teams })));
    }
    out
}

/// Creates the scenario's teams and keys through LiteLLM's admin API with `master_key`.
/// `Err` carries the gateway's own answer (e.g. LiteLLM without a database: `No db
/// connected`). Does nothing for a scenario without keys or teams.
pub async fn setup_litellm(
    scenario: &Scenario,
    gateway: &GatewayUrl,
    master_key: &str,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<usize, String> {
    let (calls, _) = litellm_admin_calls(scenario);
    for (path, body) in cleanup_calls(&calls) {
        // A key or team that does not exist yet is the usual case: whatever the answer, go on.
        let _ = post(gateway, master_key, path, &body).await;
    }
    for c in &calls {
        progress(&format!("setup: POST {} {}", c.path, c.body));
        let (status, body) = post(gateway, master_key, c.path, &c.body)
            .await
            .map_err(|e| format!("{} failed: {e}", c.path))?;
        if !(200..300).contains(&status) {
            return Err(format!("{} answered {status}: {}", c.path, quote(&body)));
        }
    }
    Ok(calls.len())
}

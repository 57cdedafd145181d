//! An open-loop, constant-rate load generator for OpenAI-compatible endpoints on loopback.
//!
//! Owns: sending request i at `start + i / rate` whatever earlier requests are doing (open
//! loop: a slow server cannot slow the offered load, and each latency is measured from the
//! request's *scheduled* start, less at most [`TIMER_SLACK`] of timer lateness, so queueing
//! is counted rather than hidden), over a bounded
//! pool of keep-alive HTTP/1.1 connections; recording latencies in HDR histograms (total,
//! and for streams the time to the first chunk); bounding the run in requests and time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use switchback::transport::{Connector, TcpConnector};
use tokio::sync::{Mutex, Semaphore};

/// Requests one run may send, whatever the rate and duration say.
pub const MAX_LOAD_REQUESTS: u64 = 2_000_000;
/// Longest run.
pub const MAX_LOAD_DURATION: Duration = Duration::from_secs(3600);
/// Longest a single request may take before it counts as an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Lateness of a timer wake-up not counted as latency (tokio's timer resolution).
pub const TIMER_SLACK: Duration = Duration::from_millis(1);
/// Connections a run may open.
pub const MAX_CONNECTIONS: usize = 10_000;

/// What to send, where, how fast.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub host: String,
    pub port: u16,
    /// e.g. `/v1/chat/completions`.
    pub path: String,
    pub key: Option<String>,
    /// The request body (its `stream` field decides how the answer is read).
    pub body: Value,
    pub rate: f64,
    pub duration: Duration,
    pub connections: usize,
}

impl LoadSpec {
    pub fn check(&self) -> Result<(), String> {
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= 1e6) {
            return Err(format!(
                "rate {}: must be above 0 and at most 1000000 per second",
                self.rate
            ));
        }
        if self.duration.is_zero() || self.duration > MAX_LOAD_DURATION {
            return Err(format!(
                "duration must be above 0 and at most {} s",
                MAX_LOAD_DURATION.as_secs()
            ));
        }
        if self.connections == 0 || self.connections > MAX_CONNECTIONS {
            return Err(format!("connections must be 1 to {MAX_CONNECTIONS}"));
        }
        if self.planned() > MAX_LOAD_REQUESTS {
            return Err(format!(
                "{} requests is over MAX_LOAD_REQUESTS = {MAX_LOAD_REQUESTS}",
                self.planned()
            ));
        }
        Ok(())
    }

    /// Requests the run sends: rate × duration.
    pub fn planned(&self) -> u64 {
        (self.rate * self.duration.as_secs_f64()).round().max(1.0) as u64
    }

    fn stream(&self) -> bool {
        self.body
            .get("stream")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

/// Latency histogram in microseconds, 1 µs to 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub planned: u64,
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    /// The first few distinct error descriptions.
    pub error_samples: Vec<String>,
    /// Scheduled start to the end of the answer, µs.
    pub total: Histogram<u64>,
    /// Scheduled start to the first body bytes of a stream, µs.
    pub first_chunk: Option<Histogram<u64>>,
    pub elapsed: Duration,
}

impl LoadReport {
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Every request has exactly one result: nothing lost.
    pub fn accounted(&self) -> bool {
        self.sent == self.planned && self.ok + self.errors == self.sent
    }

    pub fn to_json(&self) -> Value {
        let h = |h: &Histogram<u64>| {
            json!({
                "p50_us": h.value_at_quantile(0.5),
                "p90_us": h.value_at_quantile(0.9),
                "p99_us": h.value_at_quantile(0.99),
                "p99_9_us": h.value_at_quantile(0.999),
                "max_us": h.max(),
                "mean_us": h.mean(),
            })
        };
        json!({
            "planned": self.planned,
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "throughput_per_s": self.throughput(),
            "latency": h(&self.total),
            "first_chunk": self.first_chunk.as_ref().map(h),
        })
    }

    pub fn text(&self) -> String {
        let row = |name: &str, h: &Histogram<u64>| {
            format!(
                "{name:<12} p50 {:>8} µs  p90 {:>8} µs  p99 {:>8} µs  p99.9 {:>8} µs  max {:>8} µs",
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.9),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.max()
            )
        };
        let mut out = format!(
            "{} sent ({} planned), {} ok, {} errors in {:.1} s: {:.0} ok per second\n{}\n",
            self.sent,
            self.planned,
            self.ok,
            self.errors,
            self.elapsed.as_secs_f64(),
            self.throughput(),
            row("latency", &self.total)
        );
        if let Some(f) = &self.first_chunk {
            out.push_str(&row("first chunk", f));
            out.push('\n');
        }
        for e in &self.error_samples {
            out.push_str(&format!("error: {e}\n"));
        }
        out
    }
}

struct Pool {
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    slots: Semaphore,
    connector: Arc<dyn Connector>,
    host: String,
    port: u16,
}

impl Pool {
    async fn take(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        if let Some(s) = self.idle.lock().await.pop() {
            return Ok(s);
        }
        self.connect().await
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let io = self
            .connector
            .connect(&self.host, self.port)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(io))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }
}

struct Outcome {
    total: Duration,
    first_chunk: Option<Duration>,
    error: Option<String>,
}

async fn one(pool: &Pool, spec: &LoadSpec, body: &Bytes, scheduled: Instant) -> Outcome {
    let _slot = pool.slots.acquire().await.expect("never closed");
    let fail = |e: String| Outcome {
        total: scheduled.elapsed(),
        first_chunk: None,
        error: Some(e),
    };
    let mut sender = match pool.take().await {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    if sender.ready().await.is_err() {
        match pool.take().await {
            Ok(s) => sender = s,
            Err(e) => return fail(e),
        }
    }
    let mut request = Request::post(&spec.path)
        .header(header::HOST, format!("{}:{}", spec.host, spec.port))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body.clone()))
        .expect("a valid request");
    if let Some(k) = &spec.key {
        if let Ok(v) = http::HeaderValue::from_str(&format!("Bearer {k}")) {
            request.headers_mut().insert(header::AUTHORIZATION, v);
        }
    }
    // A kept connection the gateway closed while idle (its `header_read_timeout`) hands the
    // request back unwritten: it goes again on a new connection, as any keep-alive client
    // does. A request that may have been written is an error.
    let response = match sender.try_send_request(request).await {
        Ok(r) => r,
        Err(mut e) => {
            let Some(unsent) = e.take_message() else {
                return fail(format!("request: {}", e.into_error()));
            };
            sender = match pool.connect().await {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            match sender.send_request(unsent).await {
                Ok(r) => r,
                Err(e) => return fail(format!("request: {e}")),
            }
        }
    };
    let status = response.status();
    let mut body = response.into_body();
    let mut first_chunk = None;
    let mut tail = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    first_chunk.get_or_insert_with(|| scheduled.elapsed());
                    // Keep the end of the body to see how a stream ended.
                    tail.extend_from_slice(d);
                    if tail.len() > 256 {
                        tail.drain(..tail.len() - 256);
                    }
                }
            }
            Err(e) => return fail(format!("body: {e}")),
        }
    }
    let total = scheduled.elapsed();
    pool.idle.lock().await.push(sender);
    let error = if !status.is_success() {
        Some(format!("HTTP {status}"))
    } else if spec.stream() && !String::from_utf8_lossy(&tail).contains("[DONE]") {
        Some("stream ended without [DONE]".into())
    } else {
        None
    };
    Outcome {
        total,
        first_chunk: first_chunk.filter(|_| spec.stream()),
        error,
    }
}

/// Runs the load and reports. `progress` is called about once a second with (sent, done).
pub async fn run(
    spec: &LoadSpec,
    mut progress: impl FnMut(u64, u64),
) -> Result<LoadReport, String> {
    spec.check()?;
    let pool = Arc::new(Pool {
        idle: Mutex::new(Vec::new()),
        slots: Semaphore::new(spec.connections),
        connector: Arc::new(TcpConnector),
        host: spec.host.clone(),
        port: spec.port,
    });
    let body = Bytes::from(spec.body.to_string());
    let planned = spec.planned();
    let interval = Duration::from_secs_f64(1.0 / spec.rate);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Outcome>(1024);
    let started = Instant::now();
    let spec_arc = Arc::new(spec.clone());
    let sender = tokio::spawn({
        let pool = pool.clone();
        let spec = spec_arc.clone();
        async move {
            let t0 = tokio::time::Instant::now();
            for i in 0..planned {
                let at = t0 + interval.mul_f64(i as f64);
                tokio::time::sleep_until(at).await;
                // tokio's timer wakes in 1 ms steps: forgive that much lateness (or the
                // baseline itself would show up to a millisecond of it), count any more.
                let woke = Instant::now();
                let scheduled = woke.min(at.into_std() + TIMER_SLACK);
                let (pool, spec, body, tx) = (pool.clone(), spec.clone(), body.clone(), tx.clone());
                tokio::spawn(async move {
                    let outcome = match tokio::time::timeout(
                        REQUEST_TIMEOUT,
                        one(&pool, &spec, &body, scheduled),
                    )
                    .await
                    {
                        Ok(o) => o,
                        Err(_) => Outcome {
                            total: scheduled.elapsed(),
                            first_chunk: None,
                            error: Some(format!(
                                "no answer within {} s",
                                REQUEST_TIMEOUT.as_secs()
                            )),
                        },
                    };
                    let _ = tx.send(outcome).await;
                });
            }
            planned
        }
    });
    let mut report = LoadReport {
        planned,
        sent: 0,
        ok: 0,
        errors: 0,
        error_samples: Vec::new(),
        total: histogram(),
        first_chunk: spec.stream().then(histogram),
        elapsed: Duration::ZERO,
    };
    let mut last = Instant::now();
    let mut done = 0u64;
    while done < planned {
        let Some(o) = rx.recv().await else { break };
        done += 1;
        let us = |d: Duration| (d.as_micros() as u64).clamp(1, 60_000_000);
        match o.error {
            None => {
                report.ok += 1;
                report
                    .total
                    .record(us(o.total))
                    .expect("clamped into bounds");
                if let (Some(h), Some(f)) = (report.first_chunk.as_mut(), o.first_chunk) {
                    h.record(us(f)).expect("clamped into bounds");
                }
            }
            Some(e) => {
                report.errors += 1;
                if report.error_samples.len() < 5 && !report.error_samples.contains(&e) {
                    report.error_samples.push(e);
                }
            }
        }
        if last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            progress(done, planned);
        }
    }
    report.sent = sender
        .await
        .map_err(|e| format!("the sender task failed: {e}"))?;
    report.elapsed = started.elapsed();
    Ok(report)
}

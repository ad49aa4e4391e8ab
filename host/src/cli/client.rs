//! `pinlock submit` and `pinlock jobs`: the commands people use against a
//! running server's API (URL and token from flags or `PINLOCK_URL` /
//! `PINLOCK_TOKEN`). Plain HTTP: put TLS in front of the server (a reverse
//! proxy) for anything but loopback.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

/// Where the server is.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// The server's URL.
    #[arg(long, env = "PINLOCK_URL", default_value = "http://127.0.0.1:7878")]
    pub url: String,
    /// A bearer token the server accepts.
    #[arg(long, env = "PINLOCK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Arguments of `pinlock submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The worker to run.
    pub worker: String,
    /// The job's input (JSON).
    #[arg(long, default_value = "{}")]
    pub input: String,
    /// Wait for the job to finish and print its result.
    #[arg(long)]
    pub wait: bool,
    /// Attempts before the job fails for good.
    #[arg(long)]
    pub max_attempts: Option<i32>,
    /// At most one queued, running or succeeded job of the worker has this key.
    #[arg(long)]
    pub unique_key: Option<String>,
    /// When the job may start (RFC 3339).
    #[arg(long)]
    pub run_at: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Arguments of `pinlock jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Only jobs in this state (queued, running, succeeded, failed, cancelled).
    #[arg(long)]
    pub state: Option<String>,
    /// Only jobs of this worker.
    #[arg(long)]
    pub worker: Option<String>,
    /// How many (newest first).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Print the API's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

impl ApiArgs {
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}")).unwrap_or_default();
        let response = match (method, body) {
            ("POST", Some(body)) => agent.post(&url).header("Authorization", &auth).send_json(body),
            _ => agent.get(&url).header("Authorization", &auth).call(),
        };
        let mut response = response.with_context(|| format!("cannot reach the pinlock server at {}", self.url))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().context("reading the server's answer")?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }
}

fn api_error(status: u16, body: &Value) -> anyhow::Error {
    match body["error"]["message"].as_str() {
        Some(message) => {
            anyhow::anyhow!("the server refused ({status} {}): {message}", body["error"]["code"].as_str().unwrap_or(""))
        }
        None => anyhow::anyhow!("the server answered {status}: {body}"),
    }
}

/// Submits a job; with `--wait`, polls until it finishes and prints it.
pub async fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let input: Value = serde_json::from_str(&args.input).context("--input is not valid JSON")?;
    let mut body = json!({ "worker": args.worker, "input": input });
    for (key, value) in [
        ("max_attempts", args.max_attempts.map(Value::from)),
        ("unique_key", args.unique_key.map(Value::from)),
        ("run_at", args.run_at.map(Value::from)),
    ] {
        if let Some(value) = value {
            body[key] = value;
        }
    }
    let api = args.api;
    let wait = args.wait;
    tokio::task::spawn_blocking(move || {
        let (status, answer) = api.call("POST", "/v1/jobs", Some(&body))?;
        if status != 202 {
            return Err(api_error(status, &answer));
        }
        let id = answer["id"].as_i64().context("the server's answer has no job id")?;
        if !wait {
            println!("{answer}");
            return Ok(ExitCode::SUCCESS);
        }
        let started = Instant::now();
        loop {
            let (status, job) = api.call("GET", &format!("/v1/jobs/{id}"), None)?;
            if status != 200 {
                return Err(api_error(status, &job));
            }
            match job["state"].as_str() {
                Some("succeeded") => {
                    println!("{job}");
                    return Ok(ExitCode::SUCCESS);
                }
                Some("failed" | "cancelled") => {
                    println!("{job}");
                    return Ok(ExitCode::FAILURE);
                }
                _ => std::thread::sleep(Duration::from_millis(if started.elapsed() < Duration::from_secs(2) {
                    20
                } else {
                    250
                })),
            }
        }
    })
    .await?
}

/// Lists jobs.
pub async fn jobs(args: JobsArgs) -> anyhow::Result<ExitCode> {
    let mut query = format!("/v1/jobs?limit={}", args.limit);
    for (key, value) in [("state", &args.state), ("worker", &args.worker)] {
        if let Some(value) = value {
            // Worker names (and states) need no URL escaping.
            if !pinlock::server::config::valid_worker_name(value) {
                bail!("--{key} {value:?}: letters, digits, '-' and '_' only");
            }
            query.push_str(&format!("&{key}={value}"));
        }
    }
    let json_out = args.json;
    let api = args.api;
    let (status, answer) = tokio::task::spawn_blocking(move || api.call("GET", &query, None)).await??;
    if status != 200 {
        return Err(api_error(status, &answer));
    }
    if json_out {
        println!("{answer}");
        return Ok(ExitCode::SUCCESS);
    }
    let jobs = answer["jobs"].as_array().cloned().unwrap_or_default();
    if jobs.is_empty() {
        println!("no jobs");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:>8}  {:<16} {:<10} {:>7}  {:<24} result", "id", "worker", "state", "attempt", "created");
    for job in jobs {
        let result = match (&job["output"], &job["error"]) {
            (Value::Null, Value::String(e)) => format!("error: {e}"),
            (Value::Null, _) => String::new(),
            (output, _) => output.to_string(),
        };
        let result: String = result.chars().take(60).collect();
        println!(
            "{:>8}  {:<16} {:<10} {:>7}  {:<24} {result}",
            job["id"].as_i64().unwrap_or(0),
            job["worker"].as_str().unwrap_or(""),
            job["state"].as_str().unwrap_or(""),
            format!("{}/{}", job["attempt"], job["max_attempts"]),
            job["created_at"].as_str().unwrap_or("").chars().take(23).collect::<String>(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

//! A work queue on Redis that the CI machines of one build drain together
//! (`shoal run --queue URL --build ID`, then `shoal report`).
//!
//! This module moves units and results; it decides nothing about order or
//! workers: the first machine publishes the units its scheduler would start
//! (`shoal_scheduler::Workload::units`, in the scheduler's order), each machine's
//! scheduler runs what its machine reserves. [`session`] holds the Redis
//! protocol (keys, leases, heartbeat), [`stored`] what is stored.

pub mod session;
pub mod stored;

use std::time::Duration;

use crate::errors::ShoalError;

pub use session::{Heartbeat, Joined, Progress, Reservation, Reserved, Session};
pub use stored::{BuildInfo, StoredResult};

/// How long a machine's lease lasts without a heartbeat, by default.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// How long a machine waits for the first machine to publish, by default.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(600);

/// How long a build's keys live, by default (a day: a retried job can still
/// find its units).
pub const DEFAULT_TTL_SECONDS: u64 = 24 * 3600;

/// What the queue flags and the environment resolved to.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSettings {
    /// `redis://HOST:PORT/DB`.
    pub url: String,
    /// The build every machine of one CI run shares.
    pub build: String,
    /// This machine's name (a retried job with the same name re-runs what
    /// the name ran).
    pub machine: String,
    /// A lease lasts this long without a heartbeat.
    pub lease: Duration,
    /// How long to wait for the units to be published (and, for the
    /// report, for the build to start).
    pub wait: Duration,
    /// Seconds the build's keys live.
    pub ttl_seconds: u64,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How long one command may take.
    pub io_timeout: Duration,
}

impl QueueSettings {
    /// The URL without its password, for messages.
    pub fn display_url(&self) -> String {
        redact(&self.url)
    }
}

/// What the queue flags hold, as typed.
#[derive(Debug, Clone, Default)]
pub struct QueueRequest {
    /// `--queue` (`auto`: `$SHOAL_QUEUE`, else `$REDIS_URL`), or
    /// `[tool.shoal] queue`.
    pub queue: Option<String>,
    /// `--build`.
    pub build: Option<String>,
    /// `--machine`.
    pub machine: Option<String>,
    /// `--queue-lease` seconds.
    pub lease: Option<f64>,
    /// `--queue-wait` seconds.
    pub wait: Option<f64>,
    /// `--queue-ttl` seconds.
    pub ttl: Option<u64>,
}

/// CI variables naming the build, in the order looked for: the same on
/// every machine of a run and on a retried job.
const BUILD_VARIABLES: &[&str] =
    &["GITHUB_RUN_ID", "CI_PIPELINE_ID", "BUILDKITE_BUILD_ID", "CIRCLE_WORKFLOW_ID", "BUILD_TAG"];

/// CI variables naming this machine among the build's (GitHub Actions has
/// none: `$GITHUB_JOB` is the same for every job of a matrix).
const MACHINE_VARIABLES: &[&str] = &["CI_NODE_INDEX", "BUILDKITE_PARALLEL_JOB", "CIRCLE_NODE_INDEX"];

/// Resolves the queue flags against the environment; `None` without
/// `--queue`.
pub fn resolve(
    request: QueueRequest,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<QueueSettings>, ShoalError> {
    let usage = |message: &str| ShoalError::Usage(message.to_owned());
    let Some(queue) = request.queue else {
        let typed = [request.build.is_some(), request.machine.is_some(), request.lease.is_some()];
        if typed.into_iter().chain([request.wait.is_some(), request.ttl.is_some()]).any(|typed| typed) {
            return Err(usage(
                "--build, --machine, --queue-lease, --queue-wait and --queue-ttl go with --queue",
            ));
        }
        return Ok(None);
    };
    let url = if queue == "auto" {
        env("SHOAL_QUEUE").or_else(|| env("REDIS_URL")).ok_or_else(|| {
            usage(
                "--queue auto: neither $SHOAL_QUEUE nor $REDIS_URL is set; give --queue redis://HOST:PORT/DB",
            )
        })?
    } else {
        queue
    };
    if !url.starts_with("redis://") && !url.starts_with("rediss://") && !url.starts_with("redis+unix://") {
        return Err(ShoalError::Usage(format!(
            "--queue: expected redis://HOST:PORT/DB or `auto`, got `{url}`"
        )));
    }
    let build = request.build.or_else(|| first_set(BUILD_VARIABLES, &env)).ok_or_else(|| {
        usage(
            "--queue needs --build ID, the same on every machine of the build (e.g. the CI's run id); \
             none of $GITHUB_RUN_ID, $CI_PIPELINE_ID, $BUILDKITE_BUILD_ID, $CIRCLE_WORKFLOW_ID, $BUILD_TAG is set",
        )
    })?;
    let machine = request
        .machine
        .or_else(|| first_set(MACHINE_VARIABLES, &env).map(|index| format!("node-{index}")))
        .unwrap_or_else(default_machine);
    let seconds = |value: Option<f64>, default: Duration| value.map_or(default, Duration::from_secs_f64);
    Ok(Some(QueueSettings {
        url,
        build,
        machine,
        lease: seconds(request.lease, DEFAULT_LEASE),
        wait: seconds(request.wait, DEFAULT_WAIT),
        ttl_seconds: request.ttl.unwrap_or(DEFAULT_TTL_SECONDS),
        connect_timeout: Duration::from_secs(5),
        io_timeout: Duration::from_secs(10),
    }))
}

fn first_set(names: &[&str], env: &impl Fn(&str) -> Option<String>) -> Option<String> {
    names.iter().find_map(|name| env(name).filter(|value| !value.is_empty()))
}

/// The host name and the process id: unique, but not kept by a retried job.
fn default_machine() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty());
    format!("{}-{}", host.unwrap_or_else(|| "machine".to_owned()), std::process::id())
}

/// `redis://user:secret@host` as `redis://user:***@host`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((credentials, host)) = rest.split_once('@') else { return url.to_owned() };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://***@{host}"),
    }
}

/// What can go wrong with the queue.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueueError {
    /// Redis cannot be reached at the start.
    #[error("cannot reach the queue at {url}: {error}")]
    Unreachable {
        /// The URL, without its password.
        url: String,
        /// The client's error.
        error: String,
    },
    /// The connection failed during the run.
    #[error(
        "lost the queue at {url}: {error}; results stored so far are kept, and this machine's unfinished \
         units go back to the queue once its lease expires"
    )]
    Lost {
        /// The URL, without its password.
        url: String,
        /// The client's error.
        error: String,
    },
    /// This machine collected other tests than the published build.
    #[error(
        "machine {machine} refuses to join: its collection differs from the build's: {difference}; every \
         machine of a build must collect the same tests (same code, same selection)"
    )]
    Refused {
        /// This machine.
        machine: String,
        /// Where the collections differ.
        difference: String,
    },
    /// Nobody published the units in time.
    #[error("build {build}: no units were published within {seconds}s{}", match master {
        Some(machine) => format!(" (machine {machine} arrived first and was to publish them; did it fail?)"),
        None => " (no machine has joined the build)".to_owned(),
    })]
    NotPublished {
        /// The build.
        build: String,
        /// How long was waited.
        seconds: f64,
        /// The machine that won the right to publish, if any.
        master: Option<String>,
    },
    /// The stored data is not what shoal writes.
    #[error("unexpected data in the queue: {0}")]
    Corrupt(String),
    /// Units are leased to machines that are gone and nobody is left to
    /// take them.
    #[error("{0}")]
    Abandoned(String),
}

impl From<QueueError> for ShoalError {
    fn from(error: QueueError) -> Self {
        ShoalError::Queue(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| pairs.iter().find(|(key, _)| *key == name).map(|(_, value)| (*value).to_owned())
    }

    #[test]
    fn auto_reads_the_url_build_and_machine_from_the_ci() {
        let request = QueueRequest { queue: Some("auto".to_owned()), ..QueueRequest::default() };
        let settings = resolve(
            request,
            env(&[
                ("REDIS_URL", "redis://10.0.0.2:6379/0"),
                ("CI_PIPELINE_ID", "77"),
                ("CI_NODE_INDEX", "2"),
            ]),
        )
        .expect("resolves")
        .expect("a queue");
        assert_eq!(
            (settings.url.as_str(), settings.build.as_str(), settings.machine.as_str()),
            ("redis://10.0.0.2:6379/0", "77", "node-2")
        );
    }

    #[test]
    fn a_queue_needs_a_build_and_a_redis_url() {
        let request = |queue: &str| QueueRequest { queue: Some(queue.to_owned()), ..QueueRequest::default() };
        let error = resolve(request("redis://127.0.0.1:6379/0"), env(&[])).expect_err("no build");
        assert!(error.to_string().contains("--build"), "{error}");
        let error =
            resolve(request("localhost:6379"), env(&[("GITHUB_RUN_ID", "1")])).expect_err("no scheme");
        assert!(error.to_string().contains("redis://"), "{error}");
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(redact("redis://ci:hunter2@cache:6379/1"), "redis://ci:***@cache:6379/1");
        assert_eq!(redact("redis://cache:6379/1"), "redis://cache:6379/1");
    }
}

//! One machine's (or the report's) connection to a build's queue in Redis,
//! and the protocol on it: publish the units once, reserve one under a
//! lease, store results, acknowledge, and the heartbeat that keeps this
//! machine's leases alive.
//!
//! Keys, all under `shoal:<build>:` and all expiring with the build's TTL:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `master` | string | the machine that publishes (`SET NX`) |
//! | `ready` | string | set once everything below is published |
//! | `info` | string | [`BuildInfo`], JSON: the collection and the header |
//! | `units` | hash | unit id → its node ids, JSON |
//! | `cost` | hash | unit id → its expected seconds (a reservation takes units up to a budget) |
//! | `queue` | list | unit ids not yet reserved, in the scheduler's order |
//! | `leases` | hash | unit id → the machine holding it |
//! | `done` | set | acknowledged unit ids |
//! | `alive:<machine>` | string | the heartbeat, expiring after the lease |
//! | `machine:<machine>` | list | the units the machine reserved (retry mode) |
//! | `machines` | hash | machine → its worker count |
//! | `results` | hash | node id → [`StoredResult`], JSON, first one kept |
//! | `warnings` | hash | machine → the warnings its run recorded, JSON |
//! | `attempts` | hash | `<n>:<node id>` → the failed attempt `n` handed back for a rerun |
//!
//! A failed test with reruns left goes back to the head of `queue` as a
//! unit of its own, `rerun:<attempts made>:<node id>` (and `ready`, the
//! unit count, grows by one), so any machine may rerun it.
//!
//! A unit leased to a machine whose heartbeat has expired is reserved
//! again by the next machine that asks (`RESERVE`, one Lua script, so two
//! machines never take one unit at once).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::{Commands, Connection, Script};

use super::stored::{BuildInfo, StoredAttempt, StoredResult};
use super::{QueueError, QueueSettings};
use crate::protocol::WarningMessage;

/// Takes units from the queue's head while their expected seconds (`cost`)
/// stay under a budget (one at least, `most` at most); with none queued,
/// one whose machine is gone. KEYS none (one instance); ARGV: prefix,
/// machine, TTL seconds, budget seconds, most units.
const RESERVE: &str = r"
local p, m, ttl, budget, most = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local taken, reclaimed, spent = {}, 0, 0
while #taken < most and (#taken == 0 or spent < budget) do
  local unit = redis.call('LPOP', p .. 'queue')
  if not unit then break end
  table.insert(taken, unit)
  spent = spent + (tonumber(redis.call('HGET', p .. 'cost', unit)) or 0)
end
if #taken == 0 then
  local leases = redis.call('HGETALL', p .. 'leases')
  for i = 1, #leases, 2 do
    if redis.call('EXISTS', p .. 'alive:' .. leases[i + 1]) == 0 then
      taken = {leases[i]}
      reclaimed = 1
      break
    end
  end
end
if #taken == 0 then
  if redis.call('HLEN', p .. 'leases') == 0 then return {'drained'} end
  return {'wait'}
end
local reply = {'units', tostring(reclaimed)}
for _, unit in ipairs(taken) do
  redis.call('HSET', p .. 'leases', unit, m)
  redis.call('RPUSH', p .. 'machine:' .. m, unit)
  table.insert(reply, unit)
  table.insert(reply, redis.call('HGET', p .. 'units', unit))
end
redis.call('EXPIRE', p .. 'leases', ttl)
redis.call('EXPIRE', p .. 'machine:' .. m, ttl)
return reply
";

/// Acknowledges units. ARGV: prefix, TTL seconds, the units.
const ACKNOWLEDGE: &str = r"
local p, ttl = ARGV[1], tonumber(ARGV[2])
for i = 3, #ARGV do
  redis.call('SADD', p .. 'done', ARGV[i])
  redis.call('HDEL', p .. 'leases', ARGV[i])
end
redis.call('EXPIRE', p .. 'done', ttl)
return 1
";

/// The most units one reservation takes.
const MOST_UNITS: usize = 256;

/// Hands a failed test back for a rerun. ARGV: prefix, unit id, its node
/// ids (JSON), the attempt's field, the attempt (JSON), TTL seconds.
const HAND_BACK: &str = r"
local p, unit, nodeids, field, attempt, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
redis.call('HSET', p .. 'attempts', field, attempt)
redis.call('EXPIRE', p .. 'attempts', ttl)
if redis.call('HSETNX', p .. 'units', unit, nodeids) == 1 then
  redis.call('LPUSH', p .. 'queue', unit)
  redis.call('INCR', p .. 'ready')
end
return 1
";

/// How often the heartbeat is renewed, as a fraction of the lease.
const HEARTBEATS_PER_LEASE: u32 = 4;

/// How often a waiting machine or report looks again.
pub const POLL: Duration = Duration::from_millis(200);

/// A reserved unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    /// The unit's id in the queue.
    pub unit: String,
    /// Its tests.
    pub nodeids: Vec<String>,
    /// It was another machine's, whose heartbeat stopped.
    pub reclaimed: bool,
}

/// What asking for work gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// Units to run, in queue order.
    Units(Vec<Reserved>),
    /// Nothing is queued, but other machines hold leases: ask again later.
    Wait,
    /// Every unit is acknowledged.
    Drained,
}

/// How this machine joined the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joined {
    /// It published the units.
    Published,
    /// Another machine had published them.
    Found,
    /// The build is drained and this machine ran these units before: a
    /// retried job runs them again (retry mode).
    Retry(Vec<String>),
}

/// A connection to one build's keys.
pub struct Session {
    connection: Connection,
    settings: QueueSettings,
    prefix: String,
}

impl Session {
    /// Connects, failing fast (within the connect timeout) and naming the
    /// URL when Redis cannot be reached.
    pub fn connect(settings: &QueueSettings) -> Result<Self, QueueError> {
        let connection = open(settings)?;
        Ok(Self { connection, prefix: format!("shoal:{}:", settings.build), settings: settings.clone() })
    }

    /// The settings this session was opened with.
    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn lost(&self, error: redis::RedisError) -> QueueError {
        QueueError::Lost { url: self.settings.display_url(), error: error.to_string() }
    }

    /// Joins the build: the first machine publishes `info` and `units`
    /// (asked for only then); the others wait for them, bounded by the
    /// queue wait, and must have collected the same tests.
    pub fn join(
        &mut self,
        info: &BuildInfo,
        workers: usize,
        units: impl FnOnce() -> Vec<(Vec<String>, f64)>,
    ) -> Result<Joined, QueueError> {
        let ttl = self.settings.ttl_seconds;
        let machine = self.settings.machine.clone();
        let won: bool = redis::cmd("SET")
            .arg(self.key("master"))
            .arg(&machine)
            .arg("NX")
            .arg("EX")
            .arg(ttl)
            .query::<Option<String>>(&mut self.connection)
            .map_err(|error| self.lost(error))?
            .is_some();
        let machines = self.key("machines");
        let _: () = redis::pipe()
            .hset(&machines, &machine, workers)
            .expire(&machines, ttl as i64)
            .query(&mut self.connection)
            .map_err(|error| self.lost(error))?;
        if won {
            self.publish(info, &units())?;
            return Ok(Joined::Published);
        }
        let published = self.wait_for_info()?;
        if let Some(difference) = info.first_difference(&published) {
            return Err(QueueError::Refused { machine, difference });
        }
        self.retry_units()
    }

    fn publish(&mut self, info: &BuildInfo, units: &[(Vec<String>, f64)]) -> Result<(), QueueError> {
        let ttl = self.settings.ttl_seconds as i64;
        let info_json = serde_json::to_string(info).expect("build info serialises");
        let mut pipe = redis::pipe();
        pipe.atomic().set_ex(self.key("info"), info_json, ttl as u64);
        let (units_key, queue_key, cost_key) = (self.key("units"), self.key("queue"), self.key("cost"));
        pipe.del(&units_key).del(&queue_key).del(&cost_key);
        for (id, (nodeids, cost)) in units.iter().enumerate() {
            let nodeids = serde_json::to_string(nodeids).expect("node ids serialise");
            pipe.hset(&units_key, id, nodeids).hset(&cost_key, id, cost).rpush(&queue_key, id);
        }
        pipe.expire(&units_key, ttl).expire(&queue_key, ttl).expire(&cost_key, ttl);
        pipe.set_ex(self.key("ready"), units.len(), ttl as u64);
        pipe.query::<()>(&mut self.connection).map_err(|error| self.lost(error))
    }

    /// The published build, once it is: waits up to the queue wait.
    pub fn wait_for_info(&mut self) -> Result<BuildInfo, QueueError> {
        let deadline = Instant::now() + self.settings.wait;
        loop {
            let ready: Option<String> =
                self.connection.get(self.key("ready")).map_err(|error| self.lost(error))?;
            if ready.is_some() {
                let text: String = self.connection.get(self.key("info")).map_err(|error| self.lost(error))?;
                return serde_json::from_str(&text)
                    .map_err(|error| QueueError::Corrupt(format!("the build's info: {error}")));
            }
            if Instant::now() >= deadline {
                let master: Option<String> =
                    self.connection.get(self.key("master")).map_err(|error| self.lost(error))?;
                return Err(QueueError::NotPublished {
                    build: self.settings.build.clone(),
                    seconds: self.settings.wait.as_secs_f64(),
                    master,
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Retry mode: when the build is drained, the units this machine's name
    /// reserved before.
    fn retry_units(&mut self) -> Result<Joined, QueueError> {
        if self.progress()?.remaining() > 0 {
            return Ok(Joined::Found);
        }
        let machine_key = self.key(&format!("machine:{}", self.settings.machine));
        let units: Vec<String> =
            self.connection.lrange(machine_key, 0, -1).map_err(|error| self.lost(error))?;
        Ok(if units.is_empty() { Joined::Found } else { Joined::Retry(dedup(units)) })
    }

    /// Reserves the next units, about `budget` expected seconds of them,
    /// under this machine's lease.
    pub fn reserve(&mut self, budget: f64) -> Result<Reservation, QueueError> {
        let reply: Vec<String> = Script::new(RESERVE)
            .arg(&self.prefix)
            .arg(&self.settings.machine)
            .arg(self.settings.ttl_seconds)
            .arg(budget)
            .arg(MOST_UNITS)
            .invoke(&mut self.connection)
            .map_err(|error| self.lost(error))?;
        match reply.first().map(String::as_str) {
            Some("drained") => Ok(Reservation::Drained),
            Some("wait") => Ok(Reservation::Wait),
            Some("units") if reply.len() >= 4 && reply.len().is_multiple_of(2) => {
                let reclaimed = reply[1] == "1";
                let units = reply[2..].chunks(2).map(|pair| {
                    Ok(Reserved { unit: pair[0].clone(), nodeids: parse_nodeids(&pair[1])?, reclaimed })
                });
                Ok(Reservation::Units(units.collect::<Result<Vec<_>, QueueError>>()?))
            }
            _ => Err(QueueError::Corrupt(format!("unexpected answer to a reservation: {reply:?}"))),
        }
    }

    /// A unit's tests, by its id (retry mode).
    pub fn unit(&mut self, unit: &str) -> Result<Vec<String>, QueueError> {
        let text: Option<String> =
            self.connection.hget(self.key("units"), unit).map_err(|error| self.lost(error))?;
        parse_nodeids(&text.ok_or_else(|| QueueError::Corrupt(format!("no unit {unit}")))?)
    }

    /// Which of these tests already have a stored result.
    pub fn recorded(&mut self, nodeids: &[String]) -> Result<Vec<bool>, QueueError> {
        if nodeids.is_empty() {
            return Ok(Vec::new());
        }
        let found: Vec<bool> = redis::cmd("HMGET")
            .arg(self.key("results"))
            .arg(nodeids)
            .query::<Vec<Option<String>>>(&mut self.connection)
            .map_err(|error| self.lost(error))?
            .into_iter()
            .map(|result| result.is_some())
            .collect();
        Ok(found)
    }

    /// Stores results (the first stored for a test is kept, unless
    /// `replace`: a retried job's own tests), then acknowledges the units
    /// they complete, in one transaction.
    pub fn store(
        &mut self,
        results: &[StoredResult],
        replace: bool,
        done: &[String],
    ) -> Result<(), QueueError> {
        if results.is_empty() && done.is_empty() {
            return Ok(());
        }
        let ttl = self.settings.ttl_seconds as i64;
        let key = self.key("results");
        let mut pipe = redis::pipe();
        pipe.atomic();
        for result in results {
            let json = serde_json::to_string(result).expect("a result serialises");
            let command = if replace { "HSET" } else { "HSETNX" };
            pipe.cmd(command).arg(&key).arg(&result.nodeid).arg(json).ignore();
        }
        pipe.expire(&key, ttl).ignore();
        if !done.is_empty() {
            let done_key = self.key("done");
            pipe.sadd(&done_key, done).ignore().expire(&done_key, ttl).ignore();
            pipe.hdel(self.key("leases"), done).ignore();
        }
        pipe.query::<()>(&mut self.connection).map_err(|error| self.lost(error))
    }

    /// Stores this machine's warnings (replacing those of an earlier try).
    pub fn store_warnings(&mut self, warnings: &[WarningMessage]) -> Result<(), QueueError> {
        let key = self.key("warnings");
        let json = serde_json::to_string(warnings).expect("warnings serialise");
        redis::pipe()
            .hset(&key, &self.settings.machine, json)
            .ignore()
            .expire(&key, self.settings.ttl_seconds as i64)
            .ignore()
            .query::<()>(&mut self.connection)
            .map_err(|error| self.lost(error))
    }

    /// Hands a failed test back to the queue's head for a rerun, with its
    /// failed attempt (the `attempts`-th).
    pub fn hand_back(
        &mut self,
        nodeid: &str,
        attempts: u8,
        attempt: &StoredAttempt,
    ) -> Result<(), QueueError> {
        let nodeids = serde_json::to_string(&[nodeid]).expect("node ids serialise");
        Script::new(HAND_BACK)
            .arg(&self.prefix)
            .arg(format!("{RERUN_PREFIX}{attempts}:{nodeid}"))
            .arg(nodeids)
            .arg(format!("{attempts}:{nodeid}"))
            .arg(serde_json::to_string(attempt).expect("an attempt serialises"))
            .arg(self.settings.ttl_seconds)
            .invoke::<i64>(&mut self.connection)
            .map(drop)
            .map_err(|error| self.lost(error))
    }

    /// Acknowledges units: their results are stored.
    pub fn acknowledge(&mut self, units: &[String]) -> Result<(), QueueError> {
        if units.is_empty() {
            return Ok(());
        }
        Script::new(ACKNOWLEDGE)
            .arg(&self.prefix)
            .arg(self.settings.ttl_seconds)
            .arg(units)
            .invoke::<i64>(&mut self.connection)
            .map(drop)
            .map_err(|error| self.lost(error))
    }

    /// How far the build is.
    pub fn progress(&mut self) -> Result<Progress, QueueError> {
        let (units, done, machines): (Option<usize>, usize, Vec<String>) = redis::pipe()
            .get(self.key("ready"))
            .scard(self.key("done"))
            .hkeys(self.key("machines"))
            .query(&mut self.connection)
            .map_err(|error| self.lost(error))?;
        let mut alive = 0;
        for machine in machines {
            let beating: bool = self
                .connection
                .exists(self.key(&format!("alive:{machine}")))
                .map_err(|error| self.lost(error))?;
            alive += usize::from(beating);
        }
        Ok(Progress { units: units.unwrap_or(0), done, alive })
    }

    /// Every stored result, and each machine's worker count.
    pub fn results(&mut self) -> Result<StoredBuild, QueueError> {
        let stored: Vec<String> =
            self.connection.hvals(self.key("results")).map_err(|error| self.lost(error))?;
        let results = stored
            .iter()
            .map(|text| {
                serde_json::from_str(text).map_err(|error| QueueError::Corrupt(format!("a result: {error}")))
            })
            .collect::<Result<Vec<StoredResult>, _>>()?;
        let mut machines: Vec<(String, usize)> =
            self.connection.hgetall(self.key("machines")).map_err(|error| self.lost(error))?;
        machines.sort();
        let mut warnings_by_machine: Vec<(String, String)> =
            self.connection.hgetall(self.key("warnings")).map_err(|error| self.lost(error))?;
        warnings_by_machine.sort();
        let mut warnings = Vec::new();
        for (_, text) in warnings_by_machine {
            let mut some: Vec<WarningMessage> = serde_json::from_str(&text)
                .map_err(|error| QueueError::Corrupt(format!("warnings: {error}")))?;
            warnings.append(&mut some);
        }
        let handed: Vec<(String, String)> =
            self.connection.hgetall(self.key("attempts")).map_err(|error| self.lost(error))?;
        Ok(StoredBuild { results, machines, warnings, handed_back: handed_back(handed)? })
    }

    /// Starts this machine's heartbeat, on a connection of its own.
    pub fn heartbeat(&self) -> Result<Heartbeat, QueueError> {
        Heartbeat::start(&self.settings, self.key(&format!("alive:{}", self.settings.machine)))
    }
}

/// What the machines stored.
#[derive(Debug, Clone)]
pub struct StoredBuild {
    /// Each test's first stored result.
    pub results: Vec<StoredResult>,
    /// Each machine's name and worker count, by name.
    pub machines: Vec<(String, usize)>,
    /// The machines' warnings, by machine name.
    pub warnings: Vec<WarningMessage>,
    /// Failed attempts handed back for a rerun, by node id, oldest first.
    pub handed_back: HashMap<String, Vec<StoredAttempt>>,
}

/// The `attempts` hash's entries, by node id, in attempt order.
fn handed_back(entries: Vec<(String, String)>) -> Result<HashMap<String, Vec<StoredAttempt>>, QueueError> {
    let mut numbered: HashMap<String, Vec<(u32, StoredAttempt)>> = HashMap::new();
    for (field, text) in entries {
        let corrupt = || QueueError::Corrupt(format!("an attempt field `{field}`"));
        let (number, nodeid) = field.split_once(':').ok_or_else(corrupt)?;
        let number: u32 = number.parse().map_err(|_| corrupt())?;
        let attempt = serde_json::from_str(&text).map_err(|_| corrupt())?;
        numbered.entry(nodeid.to_owned()).or_default().push((number, attempt));
    }
    Ok(numbered
        .into_iter()
        .map(|(nodeid, mut attempts)| {
            attempts.sort_by_key(|(number, _)| *number);
            (nodeid, attempts.into_iter().map(|(_, attempt)| attempt).collect())
        })
        .collect())
}

/// The prefix of a rerun unit's id.
const RERUN_PREFIX: &str = "rerun:";

/// For a rerun unit's id, the failed attempts its test has made.
pub fn rerun_attempts(unit: &str) -> Option<u8> {
    unit.strip_prefix(RERUN_PREFIX)?.split_once(':')?.0.parse().ok()
}

/// How far a build is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Units published (0 before publication).
    pub units: usize,
    /// Units acknowledged.
    pub done: usize,
    /// Machines whose heartbeat is alive.
    pub alive: usize,
}

impl Progress {
    /// Units not yet acknowledged (0 before publication too).
    pub fn remaining(&self) -> usize {
        self.units.saturating_sub(self.done)
    }
}

/// A thread renewing this machine's `alive` key, a fraction of the lease
/// apart; ended (and the key removed: its leases go back at once) by
/// [`Heartbeat::stop`] or when dropped (a run that fails). A failure is
/// kept for the run to report.
pub struct Heartbeat {
    stop: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<QueueError>>>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeat {
    fn start(settings: &QueueSettings, key: String) -> Result<Self, QueueError> {
        let mut connection = open(settings)?;
        let lease_ms = settings.lease.as_millis() as u64;
        let beat = move |connection: &mut Connection, key: &str| -> redis::RedisResult<()> {
            redis::cmd("SET").arg(key).arg(1).arg("PX").arg(lease_ms).query(connection)
        };
        let url = settings.display_url();
        beat(&mut connection, &key)
            .map_err(|error| QueueError::Lost { url: url.clone(), error: error.to_string() })?;
        let stop = Arc::new(AtomicBool::new(false));
        let failure = Arc::new(Mutex::new(None));
        let (thread_stop, thread_failure) = (Arc::clone(&stop), Arc::clone(&failure));
        let interval = settings.lease / HEARTBEATS_PER_LEASE;
        let thread = std::thread::spawn(move || {
            let mut next = Instant::now() + interval;
            while !thread_stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
                if Instant::now() < next {
                    continue;
                }
                next = Instant::now() + interval;
                if let Err(error) = beat(&mut connection, &key) {
                    *thread_failure.lock().expect("not poisoned") =
                        Some(QueueError::Lost { url: url.clone(), error: error.to_string() });
                    return;
                }
            }
            let _: redis::RedisResult<()> = connection.del(&key);
        });
        Ok(Self { stop, failure, thread: Some(thread) })
    }

    /// The heartbeat's failure, if it failed.
    pub fn failure(&self) -> Option<QueueError> {
        self.failure.lock().expect("not poisoned").clone()
    }

    /// Ends the heartbeat and removes the key (as dropping it does).
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A connection, with timeouts so a vanished Redis is an error, not a hang.
fn open(settings: &QueueSettings) -> Result<Connection, QueueError> {
    let unreachable = |error: redis::RedisError| QueueError::Unreachable {
        url: settings.display_url(),
        error: error.to_string(),
    };
    let client = redis::Client::open(settings.url.as_str()).map_err(unreachable)?;
    let mut connection = client.get_connection_with_timeout(settings.connect_timeout).map_err(unreachable)?;
    connection.set_read_timeout(Some(settings.io_timeout)).map_err(unreachable)?;
    connection.set_write_timeout(Some(settings.io_timeout)).map_err(unreachable)?;
    redis::cmd("PING").query::<String>(&mut connection).map_err(unreachable)?;
    Ok(connection)
}

fn parse_nodeids(text: &str) -> Result<Vec<String>, QueueError> {
    serde_json::from_str(text).map_err(|error| QueueError::Corrupt(format!("a unit: {error}")))
}

/// The names in first-seen order, each once.
fn dedup(names: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    names.into_iter().filter(|name| seen.insert(name.clone())).collect()
}

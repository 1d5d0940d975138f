//! Talking to RQD over blocking gRPC: one cached channel per endpoint, a deadline on every
//! call, one retry on transient codes, and the `RunFrame` message filled as OpenCue's
//! schedulers fill it.

use std::{collections::HashMap, sync::Arc, time::Duration};

use dashmap::DashMap;
use grpcio::{CallOption, ChannelBuilder, Environment, RpcStatusCode};

use crate::{
    ids::{FrameId, JobId, LayerId, ProcId},
    model::{CORE, Resources},
    pb::{
        rqd::{
            RqdStaticKillRunningFrameRequest, RqdStaticLaunchFrameRequest, RunFrame,
            run_frame::Uid_optional,
        },
        rqd_grpc::RqdInterfaceClient,
    },
};

/// Requests a launch sends at most: a transient failure (a broken channel) is retried once.
pub const LAUNCH_ATTEMPTS: u32 = 2;

/// A launch that failed: the last request's error, and how many requests went out. A request
/// that failed in transit may still have reached RQD, so only a refusal of the one request
/// sent is sure to have started nothing.
#[derive(Debug)]
pub struct LaunchFailed {
    /// The last request's error.
    pub error: RqdError,
    /// Requests sent (1 or [`LAUNCH_ATTEMPTS`]).
    pub attempts: u32,
}

/// How long after the first request of a failed launch RQD may still start the frame: the
/// last request went out at most a timeout after the one before it, and RQD may take a
/// request it received late (a loaded box) up to three timeouts after it was sent (a soak saw
/// a launch start after two). A kill confirmed after this found whatever it could start.
pub fn quiet_after(timeout: Duration, attempts: u32) -> Duration {
    timeout * (2 + attempts.max(1))
}

/// A failed RQD call.
#[derive(Debug, thiserror::Error)]
pub enum RqdError {
    /// The host's RQD could not be reached (connection refused, DNS, not listening).
    #[error("RQD at {endpoint} unavailable: {message}")]
    Unavailable {
        /// Where.
        endpoint: String,
        /// gRPC's explanation.
        message: String,
    },
    /// The call did not finish before its deadline.
    #[error("RQD at {endpoint} timed out")]
    Timeout {
        /// Where.
        endpoint: String,
    },
    /// RQD answered with an error status.
    #[error("RQD at {endpoint} refused: {code:?} {message}")]
    Rejected {
        /// Where.
        endpoint: String,
        /// The status code.
        code: RpcStatusCode,
        /// RQD's message.
        message: String,
    },
    /// Any other gRPC failure.
    #[error("RQD at {endpoint}: {source}")]
    Other {
        /// Where.
        endpoint: String,
        /// The error.
        source: grpcio::Error,
    },
}

impl RqdError {
    fn from_grpc(endpoint: &str, error: grpcio::Error) -> RqdError {
        let endpoint = endpoint.to_owned();
        match error {
            grpcio::Error::RpcFailure(status) => match status.code() {
                RpcStatusCode::UNAVAILABLE => RqdError::Unavailable {
                    endpoint,
                    message: status.message().to_owned(),
                },
                RpcStatusCode::DEADLINE_EXCEEDED => RqdError::Timeout { endpoint },
                code => RqdError::Rejected {
                    endpoint,
                    code,
                    message: status.message().to_owned(),
                },
            },
            source => RqdError::Other { endpoint, source },
        }
    }

    /// True for the codes OpenCue retries once (after dropping the cached channel):
    /// unavailable, deadline exceeded, aborted, internal, unknown, unauthenticated, permission.
    pub(crate) fn retryable(&self) -> bool {
        match self {
            RqdError::Unavailable { .. } | RqdError::Timeout { .. } => true,
            RqdError::Rejected { code, .. } => [
                RpcStatusCode::ABORTED,
                RpcStatusCode::INTERNAL,
                RpcStatusCode::UNKNOWN,
                RpcStatusCode::UNAUTHENTICATED,
                RpcStatusCode::PERMISSION_DENIED,
            ]
            .contains(code),
            RqdError::Other { .. } => false,
        }
    }

    /// Metric label: `unavailable`, `timeout`, the status code name, or `error`.
    pub fn label(&self) -> String {
        match self {
            RqdError::Unavailable { .. } => "unavailable".into(),
            RqdError::Timeout { .. } => "timeout".into(),
            RqdError::Rejected { code, .. } => format!("{code:?}")
                .split('-')
                .nth(1)
                .unwrap_or("rejected")
                .to_lowercase(),
            RqdError::Other { .. } => "error".into(),
        }
    }
}

/// RQD clients, one cached channel per endpoint, shared by the launcher threads.
pub struct RqdClients {
    env: Arc<Environment>,
    clients: DashMap<String, RqdInterfaceClient>,
}

impl RqdClients {
    /// Creates the client side with its own completion-queue threads (`rqd-cq-*`).
    pub fn new() -> RqdClients {
        let env = Arc::new(
            grpcio::EnvBuilder::new()
                .cq_count(2)
                .name_prefix("rqd-cq")
                .build(),
        );
        RqdClients {
            env,
            clients: DashMap::new(),
        }
    }

    fn client(&self, endpoint: &str) -> RqdInterfaceClient {
        // Clone out of the map and drop the guard before any call.
        if let Some(c) = self.clients.get(endpoint) {
            return c.value().clone();
        }
        let channel = ChannelBuilder::new(self.env.clone())
            .keepalive_time(Duration::from_secs(30))
            .keepalive_timeout(Duration::from_secs(10))
            .initial_reconnect_backoff(Duration::from_millis(200))
            .max_reconnect_backoff(Duration::from_secs(5))
            .connect(endpoint);
        let client = RqdInterfaceClient::new(channel);
        self.clients
            .entry(endpoint.to_owned())
            .or_insert(client)
            .value()
            .clone()
    }

    fn forget(&self, endpoint: &str) {
        self.clients.remove(endpoint);
    }

    /// Launches a frame, retrying once ([`LAUNCH_ATTEMPTS`]) on a transient failure with a
    /// fresh channel.
    pub fn launch(
        &self,
        endpoint: &str,
        frame: RunFrame,
        timeout: Duration,
    ) -> Result<(), LaunchFailed> {
        let mut request = RqdStaticLaunchFrameRequest::new();
        request.run_frame = Some(frame).into();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result = self
                .client(endpoint)
                .launch_frame_opt(&request, CallOption::default().timeout(timeout));
            match result {
                Ok(_) => return Ok(()),
                Err(e) => {
                    let error = RqdError::from_grpc(endpoint, e);
                    self.forget(endpoint);
                    // A timed-out launch may have started the frame: sending it again can
                    // only run it twice or fail, so its outcome goes to the kill-then-undo path.
                    let timed_out = matches!(error, RqdError::Timeout { .. });
                    if attempts >= LAUNCH_ATTEMPTS || timed_out || !error.retryable() {
                        return Err(LaunchFailed { error, attempts });
                    }
                }
            }
        }
    }

    /// Asks RQD to kill a frame (best effort: used when a launch outcome is unknown).
    pub fn kill(
        &self,
        endpoint: &str,
        frame_id: &str,
        message: &str,
        timeout: Duration,
    ) -> Result<(), RqdError> {
        let mut request = RqdStaticKillRunningFrameRequest::new();
        request.frame_id = frame_id.to_owned();
        request.message = message.to_owned();
        self.client(endpoint)
            .kill_running_frame_opt(&request, CallOption::default().timeout(timeout))
            .map(|_| ())
            .map_err(|e| RqdError::from_grpc(endpoint, e))
    }
}

impl Default for RqdClients {
    fn default() -> Self {
        RqdClients::new()
    }
}

/// Everything a `RunFrame` is built from.
#[derive(Clone, Debug, Default)]
pub struct FrameLaunch {
    /// The proc's key, sent as `resource_id`.
    pub proc: ProcId,
    /// `job.pk_job`.
    pub job_id: JobId,
    /// `job.str_name`.
    pub job_name: String,
    /// `frame.pk_frame`.
    pub frame_id: FrameId,
    /// `frame.str_name`.
    pub frame_name: String,
    /// `layer.pk_layer`.
    pub layer_id: LayerId,
    /// `layer.str_name`.
    pub layer_name: String,
    /// `layer.str_cmd` before token replacement.
    pub command: String,
    /// `layer.str_range`.
    pub range: String,
    /// `layer.int_chunk_size`.
    pub chunk_size: i64,
    /// The frame number (first frame of the chunk).
    pub frame_number: i32,
    /// Last frame of the chunk.
    pub chunk_end: i32,
    /// Compact spec of the chunk's frames (`1-10`, `1-9x2`).
    pub frame_spec: String,
    /// `job.str_user`.
    pub user: String,
    /// `job.int_uid`.
    pub uid: Option<i64>,
    /// `job.str_log_dir`.
    pub log_dir: String,
    /// `job.str_show`.
    pub show: String,
    /// `job.str_shot`.
    pub shot: String,
    /// `job.str_loki_url`.
    pub loki_url: String,
    /// The job's `str_os` (empty: any). Cuebot sends the job's OS, not the host's: a host
    /// may report several (`centos7,rocky9`) and RQD's docker mode picks its image by it.
    pub os: String,
    /// `layer.b_threadable`.
    pub threadable: bool,
    /// What was reserved; its memory is also the base of RQD's memory limits.
    pub amount: Resources,
    /// `job_env` then `layer_env` (layer wins).
    pub env: Vec<(String, String)>,
}

/// Builds the `RunFrame` RQD receives. `soft` and `hard` are the memory-limit multipliers of
/// the memory booked.
pub(crate) fn run_frame(f: &FrameLaunch, soft: f64, hard: f64, now_ms: i64) -> RunFrame {
    let mut rf = RunFrame::new();
    rf.resource_id = f.proc.to_string();
    rf.job_id = f.job_id.to_string();
    rf.job_name = f.job_name.clone();
    rf.frame_id = f.frame_id.to_string();
    rf.frame_name = f.frame_name.clone();
    rf.layer_id = f.layer_id.to_string();
    rf.command = replace_tokens(f);
    rf.user_name = f.user.clone();
    rf.log_dir = f.log_dir.clone();
    rf.show = f.show.clone();
    rf.shot = f.shot.clone();
    rf.job_temp_dir = "deprecated".into();
    rf.log_file = "deprecated".into();
    rf.log_dir_file = "deprecated".into();
    rf.start_time = now_ms;
    if let Some(uid) = f.uid.and_then(|u| i32::try_from(u).ok()) {
        rf.uid_optional = Some(Uid_optional::Uid(uid));
    }
    rf.num_cores = i32::try_from(f.amount.cores).unwrap_or(i32::MAX);
    rf.num_gpus = i32::try_from(f.amount.gpus).unwrap_or(i32::MAX);
    rf.os = f.os.clone();
    // The limits follow what was booked: the layer's minimum, or less when its memory was
    // sized from history (`[memory]`), so RQD holds the frame to what the host gave it.
    rf.soft_memory_limit = (f.amount.mem_kb as f64 * soft).round() as i64;
    rf.hard_memory_limit = (f.amount.mem_kb as f64 * hard).round() as i64;
    rf.loki_url = f.loki_url.clone();
    rf.environment = environment(f);
    rf
}

/// The command with OpenCue's tokens replaced, in OpenCue's order (`#FRAME#` last, so it does
/// not clobber the longer `#FRAME_*#` tokens).
pub(crate) fn replace_tokens(f: &FrameLaunch) -> String {
    f.command
        .replace("#ZFRAME#", &format!("{:04}", f.frame_number))
        .replace("#IFRAME#", &f.frame_number.to_string())
        .replace("#FRAME_START#", &f.frame_number.to_string())
        .replace("#FRAME_END#", &f.chunk_end.to_string())
        .replace("#FRAME_CHUNK#", &f.chunk_size.to_string())
        .replace("#LAYER#", &f.layer_name)
        .replace("#JOB#", &f.job_name)
        .replace("#FRAMESPEC#", &f.frame_spec)
        .replace("#FRAME#", &f.frame_name)
}

fn environment(f: &FrameLaunch) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = f.env.iter().cloned().collect();
    let threads = (f.amount.cores / CORE).max(1);
    let pairs = [
        ("CUE3", "1".to_owned()),
        ("CUE_THREADS", threads.to_string()),
        ("CUE_MEMORY", f.amount.mem_kb.to_string()),
        ("CUE_GPUS", f.amount.gpus.to_string()),
        ("CUE_GPU_MEMORY", f.amount.gpu_mem_kb.to_string()),
        ("CUE_LOG_PATH", f.log_dir.clone()),
        ("CUE_RANGE", f.range.clone()),
        ("CUE_CHUNK", f.chunk_size.to_string()),
        ("CUE_IFRAME", f.frame_number.to_string()),
        ("CUE_LAYER", f.layer_name.clone()),
        ("CUE_JOB", f.job_name.clone()),
        ("CUE_FRAME", f.frame_name.clone()),
        ("CUE_SHOW", f.show.clone()),
        ("CUE_SHOT", f.shot.clone()),
        ("CUE_USER", f.user.clone()),
        ("CUE_JOB_ID", f.job_id.to_string()),
        ("CUE_LAYER_ID", f.layer_id.to_string()),
        ("CUE_FRAME_ID", f.frame_id.to_string()),
        (
            "CUE_THREADABLE",
            if f.threadable { "1" } else { "0" }.to_owned(),
        ),
    ];
    for (k, v) in pairs {
        env.insert(k.to_owned(), v);
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch() -> FrameLaunch {
        FrameLaunch {
            proc: "p1".into(),
            job_id: "j1".into(),
            job_name: "show-shot-job".into(),
            frame_id: "f1".into(),
            frame_name: "0005-render".into(),
            layer_id: "l1".into(),
            layer_name: "render".into(),
            command: "render -s #FRAME_START# -e #FRAME_END# -c #FRAME_CHUNK# #ZFRAME# #IFRAME# #LAYER# #JOB# #FRAMESPEC# #FRAME#".into(),
            range: "1-100".into(),
            chunk_size: 5,
            frame_number: 5,
            chunk_end: 9,
            frame_spec: "5-9".into(),
            user: "artist".into(),
            uid: Some(1234),
            amount: Resources { cores: 400, mem_kb: 1_000_000, gpus: 1, gpu_mem_kb: 10 },
            env: vec![("A".into(), "job".into()), ("A".into(), "layer".into()), ("CUE_SHOW".into(), "x".into())],
            show: "show".into(),
            ..FrameLaunch::default()
        }
    }

    #[test]
    fn tokens_are_replaced() {
        assert_eq!(
            replace_tokens(&launch()),
            "render -s 5 -e 9 -c 5 0005 5 render show-shot-job 5-9 0005-render"
        );
    }

    #[test]
    fn run_frame_fields() {
        let rf = run_frame(&launch(), 1.6, 2.0, 42);
        assert_eq!(rf.resource_id, "p1");
        assert_eq!(rf.num_cores, 400);
        assert_eq!(rf.soft_memory_limit, 1_600_000);
        assert_eq!(rf.hard_memory_limit, 2_000_000);
        assert_eq!(rf.uid_optional, Some(Uid_optional::Uid(1234)));
        assert_eq!(rf.environment["CUE_THREADS"], "4");
        assert_eq!(rf.environment["A"], "layer", "layer env overrides job env");
        assert_eq!(
            rf.environment["CUE_SHOW"], "show",
            "CUE_* wins over user env"
        );
        assert_eq!(rf.environment["CUE_THREADABLE"], "0");
        assert_eq!(rf.start_time, 42);
    }
}

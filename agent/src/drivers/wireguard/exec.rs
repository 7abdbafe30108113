//! Runs one command inside a service's container through Docker exec (bollard), the way the
//! agent reaches `wg` whether the interface is the kernel's or wireguard-go's.

use std::time::Duration;

use bollard::exec::{CreateExecOptions, StartExecResults};
use futures_util::StreamExt;

/// Why a command in the container failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("docker exec {cmd} in {container}: {source}")]
    Docker {
        cmd: String,
        container: String,
        source: bollard::errors::Error,
    },
    #[error("{cmd} in {container} exited with {code}: {stderr}")]
    Failed {
        cmd: String,
        container: String,
        code: i64,
        stderr: String,
    },
    #[error("{cmd} in {container} took longer than {0:?}", .timeout)]
    Timeout {
        cmd: String,
        container: String,
        timeout: Duration,
    },
}

/// Runs `cmd` in `container` and returns its standard output; a non-zero exit is an error
/// carrying standard error. `cmd[0]` names the program in errors (arguments may hold paths of
/// key files, never keys).
pub async fn run(
    docker: &bollard::Docker,
    container: &str,
    cmd: &[String],
    timeout: Duration,
) -> Result<String, ExecError> {
    let name = cmd.iter().take(2).cloned().collect::<Vec<_>>().join(" ");
    let docker_err = |source| ExecError::Docker {
        cmd: name.clone(),
        container: container.to_owned(),
        source,
    };
    let work = async {
        let created = docker
            .create_exec(
                container,
                CreateExecOptions {
                    cmd: Some(cmd.to_vec()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(docker_err)?;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        if let StartExecResults::Attached { mut output, .. } = docker
            .start_exec(&created.id, None)
            .await
            .map_err(docker_err)?
        {
            while let Some(chunk) = output.next().await {
                match chunk.map_err(docker_err)? {
                    bollard::container::LogOutput::StdOut { message } => {
                        stdout.extend_from_slice(&message)
                    }
                    bollard::container::LogOutput::StdErr { message } => {
                        stderr.extend_from_slice(&message)
                    }
                    _ => {}
                }
            }
        }
        let inspected = docker.inspect_exec(&created.id).await.map_err(docker_err)?;
        let code = inspected.exit_code.unwrap_or(-1);
        if code != 0 {
            return Err(ExecError::Failed {
                cmd: name.clone(),
                container: container.to_owned(),
                code,
                // Docker's own failures (a container that is restarting) arrive on stdout.
                stderr: if stderr.is_empty() {
                    String::from_utf8_lossy(&stdout).trim().to_owned()
                } else {
                    String::from_utf8_lossy(&stderr).trim().to_owned()
                },
            });
        }
        Ok(String::from_utf8_lossy(&stdout).into_owned())
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ExecError::Timeout {
            cmd: name.clone(),
            container: container.to_owned(),
            timeout,
        })?
}

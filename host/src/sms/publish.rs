//! Publishing artifacts: another node cannot read this node's files, so a
//! task registered from a local file is registered with a copy uploaded to
//! the SMS file API. Each digest is uploaded once per SMS; what was
//! uploaded is remembered in the data directory (`sms-files/<sha256>`),
//! so a restart does not upload again.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Sms, SmsCall};
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};

/// What has been uploaded, kept on disk.
#[derive(Debug)]
pub(super) struct Published {
    dir: PathBuf,
    /// Uploads are rare (once per digest) and must not race for one
    /// digest: one at a time.
    uploading: tokio::sync::Mutex<()>,
}

/// The SMS's answer to an upload.
#[derive(Debug, Deserialize)]
struct Uploaded {
    success: bool,
    #[serde(default)]
    id: String,
    #[serde(default)]
    message: String,
}

impl Published {
    pub(super) fn open(data_dir: &Path) -> Result<Published> {
        let dir = data_dir.join("sms-files");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Published {
            dir,
            uploading: tokio::sync::Mutex::new(()),
        })
    }

    /// The file id `digest` was uploaded under at the SMS at `base`.
    fn recall(&self, digest: &Sha256Digest, base: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.dir.join(digest.to_hex())).ok()?;
        let (sms, id) = text.trim().split_once('\n')?;
        (sms == base && !id.is_empty()).then(|| id.to_owned())
    }

    fn remember(&self, digest: &Sha256Digest, base: &str, id: &str) -> Result<()> {
        let path = self.dir.join(digest.to_hex());
        let temp =
            tempfile::NamedTempFile::new_in(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        std::fs::write(temp.path(), format!("{base}\n{id}\n"))
            .map_err(|e| Error::io(temp.path(), e))?;
        temp.persist(&path).map_err(|e| Error::io(&path, e.error))?;
        Ok(())
    }
}

impl Sms {
    /// The `smsfile://ID` other nodes fetch the artifact `digest` from,
    /// uploading the bytes at `path` (which must hash to `digest`; they are
    /// checked again before they leave) unless this SMS has them already.
    ///
    /// # Errors
    ///
    /// [`Error::SmsNotConfigured`] without `sms.http`;
    /// [`Error::ChecksumMismatch`] when the file no longer matches;
    /// [`Error::SmsUnavailable`], [`Error::SmsRefused`].
    pub async fn publish(
        &self,
        digest: &Sha256Digest,
        path: &Path,
        name: &str,
        location: &str,
    ) -> Result<String> {
        let base = self.files.as_ref().ok_or_else(|| Error::SmsNotConfigured {
            location: location.to_owned(),
            purpose: "to publish it to the cluster",
        })?;
        let base = base.as_str().trim_end_matches('/').to_owned();
        let _one_at_a_time = self.published.uploading.lock().await;
        if let Some(id) = self.published.recall(digest, &base) {
            return Ok(format!("smsfile://{id}"));
        }
        let owned = path.to_owned();
        let bytes = tokio::task::spawn_blocking(move || std::fs::read(&owned))
            .await
            .map_err(Error::background("reading an artifact to publish"))?
            .map_err(|e| Error::io(path, e))?;
        let actual = Sha256Digest::of(&bytes);
        if actual != *digest {
            return Err(Error::ChecksumMismatch {
                path: path.to_owned(),
                expected: digest.to_hex(),
                actual: actual.to_hex(),
            });
        }
        let id = self.upload(&base, bytes, name).await?;
        self.published.remember(digest, &base, &id)?;
        tracing::info!(%digest, file = %id, sms = %base, "artifact published to the SMS file API");
        Ok(format!("smsfile://{id}"))
    }

    async fn upload(&self, base: &str, bytes: Vec<u8>, name: &str) -> Result<String> {
        let call = SmsCall::UploadFile;
        let unavailable = |reason: String| Error::SmsUnavailable {
            call,
            endpoint: base.to_owned(),
            reason,
        };
        let refused = |message: String| Error::SmsRefused {
            call,
            endpoint: base.to_owned(),
            message,
        };
        let made = self
            .http
            .post(format!("{base}/api/v1/files"))
            .header("x-file-name", name)
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
            .await;
        self.made[call.index()].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let result = async {
            let response = made.map_err(|e| unavailable(error_chain(&e)))?;
            let status = response.status();
            if status.is_server_error() {
                return Err(unavailable(format!("HTTP {status}")));
            }
            if !status.is_success() {
                return Err(refused(format!("HTTP {status}")));
            }
            let body = response
                .bytes()
                .await
                .map_err(|e| unavailable(error_chain(&e)))?;
            let answer: Uploaded = serde_json::from_slice(&body)
                .map_err(|e| refused(format!("an answer that is not the file API's JSON: {e}")))?;
            if !answer.success || answer.id.is_empty() {
                return Err(refused(if answer.message.is_empty() {
                    "the upload was not accepted".to_owned()
                } else {
                    answer.message
                }));
            }
            Ok(answer.id)
        }
        .await;
        if result.is_err() {
            self.failed[call.index()].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        result
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

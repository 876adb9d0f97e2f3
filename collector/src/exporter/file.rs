//! `file`: every batch as one line of OTLP-JSON, appended to a file.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use super::ExportError;
use crate::encoded::Telemetry;

#[derive(Debug)]
pub struct FileExporter {
    file: Arc<Mutex<tokio::fs::File>>,
}

impl FileExporter {
    pub fn open(path: &str) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| anyhow::anyhow!("opening {path} for the file exporter: {e}"))?;
        Ok(Self { file: Arc::new(Mutex::new(tokio::fs::File::from_std(file))) })
    }

    pub async fn export(&self, data: &Telemetry) -> Result<(), ExportError> {
        let payload = data.decoded().map_err(|e| ExportError::permanent("decode", format!("decoding: {e}")))?;
        let mut line = payload.to_json();
        line.push('\n');
        let mut file = self.file.lock().await;
        file.write_all(line.as_bytes()).await.map_err(|e| ExportError::retryable("io", format!("writing: {e}")))?;
        file.flush().await.map_err(|e| ExportError::retryable("io", format!("flushing: {e}")))
    }
}

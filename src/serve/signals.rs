//! Signals that stop the service gracefully (Ctrl-C, SIGTERM, a closed console window,
//! a system shutdown) or reload it (SIGHUP).

use tokio::sync::mpsc;

use super::Wake;

/// Send a [`Wake`] for each signal, for as long as the service runs.
pub fn spawn(tx: mpsc::UnboundedSender<Wake>) {
    let t = tx.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = t.send(Wake::Shutdown("interrupt"));
        }
    });
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let t = tx.clone();
        tokio::spawn(async move {
            if let Ok(mut term) = signal(SignalKind::terminate()) {
                term.recv().await;
                let _ = t.send(Wake::Shutdown("SIGTERM"));
            }
        });
        tokio::spawn(async move {
            if let Ok(mut hup) = signal(SignalKind::hangup()) {
                while hup.recv().await.is_some() {
                    let _ = tx.send(Wake::Reload("SIGHUP"));
                }
            }
        });
    }
    // A closed console window, a log-off of a console session, a system shutdown and
    // Ctrl-Break stop gracefully like Ctrl-C (Windows then allows only a few seconds).
    #[cfg(windows)]
    {
        use tokio::signal::windows::{ctrl_break, ctrl_close, ctrl_shutdown};
        let t = tx.clone();
        tokio::spawn(async move {
            if let Ok(mut s) = ctrl_close()
                && s.recv().await.is_some()
            {
                let _ = t.send(Wake::Shutdown("console closed"));
            }
        });
        let t = tx.clone();
        tokio::spawn(async move {
            if let Ok(mut s) = ctrl_shutdown()
                && s.recv().await.is_some()
            {
                let _ = t.send(Wake::Shutdown("system shutdown"));
            }
        });
        tokio::spawn(async move {
            if let Ok(mut s) = ctrl_break()
                && s.recv().await.is_some()
            {
                let _ = tx.send(Wake::Shutdown("Ctrl-Break"));
            }
        });
    }
}

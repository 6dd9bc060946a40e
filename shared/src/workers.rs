//! The background tasks of a role, started apart from its listener so that several roles
//! can share one (`artstore standalone`), and stopped in order at shutdown.

use futures_util::future::BoxFuture;
use tokio::task::JoinHandle;

/// Tasks to abort and an orderly stop to await.
#[derive(Default)]
pub struct Workers {
    tasks: Vec<JoinHandle<()>>,
    stops: Vec<BoxFuture<'static, ()>>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers").field("tasks", &self.tasks.len()).field("stops", &self.stops.len()).finish()
    }
}

impl Workers {
    /// A task aborted at stop.
    pub fn task(mut self, t: JoinHandle<()>) -> Self {
        self.tasks.push(t);
        self
    }

    /// A future awaited at stop, after the tasks are aborted.
    pub fn on_stop(mut self, f: impl Future<Output = ()> + Send + 'static) -> Self {
        self.stops.push(Box::pin(f));
        self
    }

    /// Aborts the tasks, then runs the stops in order.
    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        for s in self.stops {
            s.await;
        }
    }
}

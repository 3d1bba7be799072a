//! Task events for containerd (`/tasks/exit` and the rest), sent in order
//! from a thread of their own: containerd answers an exit by calling back
//! into the shim (Delete), so no RPC may wait on a publish.

use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskPaused, TaskResumed,
    TaskStart,
};
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::topics;
use containerd_shim::publisher::RemotePublisher;
use std::sync::mpsc::{channel, Sender};

/// One event for containerd.
pub enum Event {
    Create(TaskCreate),
    Start(TaskStart),
    Exit(TaskExit),
    Delete(TaskDelete),
    ExecAdded(TaskExecAdded),
    ExecStarted(TaskExecStarted),
    Paused(TaskPaused),
    Resumed(TaskResumed),
}

impl Event {
    fn into_parts(self) -> (&'static str, Box<dyn MessageDyn>) {
        match self {
            Event::Create(e) => (topics::TASK_CREATE_EVENT_TOPIC, Box::new(e)),
            Event::Start(e) => (topics::TASK_START_EVENT_TOPIC, Box::new(e)),
            Event::Exit(e) => (topics::TASK_EXIT_EVENT_TOPIC, Box::new(e)),
            Event::Delete(e) => (topics::TASK_DELETE_EVENT_TOPIC, Box::new(e)),
            Event::ExecAdded(e) => (topics::TASK_EXEC_ADDED_EVENT_TOPIC, Box::new(e)),
            Event::ExecStarted(e) => (topics::TASK_EXEC_STARTED_EVENT_TOPIC, Box::new(e)),
            Event::Paused(e) => (topics::TASK_PAUSED_EVENT_TOPIC, Box::new(e)),
            Event::Resumed(e) => (topics::TASK_RESUMED_EVENT_TOPIC, Box::new(e)),
        }
    }
}

/// Where the RPCs hand events; cheap to clone.
#[derive(Clone)]
pub struct Events {
    tx: Sender<Event>,
}

impl Events {
    /// Starts the thread that forwards events to containerd's event
    /// service in `namespace`.
    pub fn start(publisher: RemotePublisher, namespace: String) -> Events {
        let (tx, rx) = channel::<Event>();
        std::thread::spawn(move || {
            for event in rx {
                let (topic, message) = event.into_parts();
                let ctx = containerd_shim::protos::ttrpc::context::Context::default();
                if let Err(e) = publisher.publish(ctx, topic, &namespace, message) {
                    log::error!("publishing {topic} to containerd: {e}");
                }
            }
        });
        Events { tx }
    }

    pub fn send(&self, event: Event) {
        // The thread lives as long as the shim.
        let _ = self.tx.send(event);
    }
}

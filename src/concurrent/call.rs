//! Callers with their types erased: a function, found again in a child process by its name, that
//! takes a connection and serde arguments and returns a serde value.

use std::any::type_name;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;

type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How one call ended, before its value is read back into the caller's type.
#[derive(Debug)]
pub(crate) enum Reply {
    Value(Json),
    Error(String),
    Panic(String),
}

/// A caller whose argument and result types are known only to itself.
pub(crate) trait Erased<C>: Send + Sync {
    /// Reads the arguments, calls, and writes the result (panics caught).
    fn call<'a>(&'a self, connection: &'a mut C, args: Json) -> LocalFuture<'a, Reply>;
}

struct Typed<F, A, R, E> {
    function: F,
    types: PhantomData<fn(A) -> (R, E)>,
}

impl<C, F, A, R, E> Erased<C> for Typed<F, A, R, E>
where
    C: 'static,
    F: for<'c> AsyncFn(&'c mut C, A) -> Result<R, E> + Send + Sync + 'static,
    A: DeserializeOwned + 'static,
    R: Serialize + 'static,
    E: Into<BoxError> + 'static,
{
    fn call<'a>(&'a self, connection: &'a mut C, args: Json) -> LocalFuture<'a, Reply> {
        Box::pin(async move {
            let args: A = match serde_json::from_value(args) {
                Ok(args) => args,
                Err(err) => return Reply::Error(format!("cannot read the arguments: {err}")),
            };
            let called = CatchUnwind(Box::pin((self.function)(connection, args))).await;
            match called {
                Ok(Ok(value)) => match serde_json::to_value(value) {
                    Ok(value) => Reply::Value(value),
                    Err(err) => Reply::Error(format!("cannot write the result: {err}")),
                },
                Ok(Err(err)) => Reply::Error(chain(err.into().as_ref())),
                Err(message) => Reply::Panic(message),
            }
        })
    }
}

/// An error's message and its causes, each once.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A future whose panic becomes its output (the panic's message).
struct CatchUnwind<'a, T>(LocalFuture<'a, T>);

impl<T> Future for CatchUnwind<'_, T> {
    type Output = Result<T, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(payload) => Poll::Ready(Err(panic_message(payload.as_ref()))),
        }
    }
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// What a child's call came to: the caller's reply, or why it could not call.
pub(crate) type Served = Result<Reply, String>;

/// A caller a test binary offers its `spawn_concurrent` children, made by
/// [`callers!`](crate::callers): found in the child by its name.
pub struct Caller {
    pub(crate) name: &'static str,
    /// Connects to the URL, waits for the release, calls: the caller's reply, or why it could
    /// not call.
    pub(crate) serve: Box<dyn Fn(String, Json) -> LocalFuture<'static, Served> + Send + Sync>,
}

impl Caller {
    /// Offers `function` to child processes. Use [`callers!`](crate::callers) rather than this.
    pub fn of<F, C, A, R, E>(function: F) -> Caller
    where
        C: sqlx::Connection + 'static,
        F: for<'c> AsyncFn(&'c mut C, A) -> Result<R, E> + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        R: Serialize + 'static,
        E: Into<BoxError> + 'static,
    {
        let erased: Arc<dyn Erased<C>> = Arc::new(Typed {
            function,
            types: PhantomData,
        });
        Caller {
            name: type_name::<F>(),
            serve: Box::new(move |url, args| {
                let erased = erased.clone();
                Box::pin(async move {
                    let mut connection = C::connect(&url)
                        .await
                        .map_err(|err| format!("cannot connect: {err}"))?;
                    super::child::wait_for_release()?;
                    Ok(erased.call(&mut connection, args).await)
                })
            }),
        }
    }
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller").field("name", &self.name).finish()
    }
}

/// One call to make: a caller, its arguments, and (for the in-process twin) the caller itself.
pub(crate) struct Call<C> {
    pub(crate) name: &'static str,
    pub(crate) args: Json,
    pub(crate) local: Arc<dyn Erased<C>>,
}

impl<C: 'static> Call<C> {
    pub(crate) fn new<F, A, R, E>(function: F, args: &A) -> Result<Self, String>
    where
        F: for<'c> AsyncFn(&'c mut C, A) -> Result<R, E> + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + 'static,
        E: Into<BoxError> + 'static,
    {
        let args = serde_json::to_value(args)
            .map_err(|err| format!("cannot write the arguments: {err}"))?;
        Ok(Call {
            name: type_name::<F>(),
            args,
            local: Arc::new(Typed {
                function,
                types: PhantomData,
            }),
        })
    }
}

impl<C> Clone for Call<C> {
    fn clone(&self) -> Self {
        Call {
            name: self.name,
            args: self.args.clone(),
            local: self.local.clone(),
        }
    }
}

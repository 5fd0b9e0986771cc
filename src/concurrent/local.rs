//! The in-process twin of `spawn_concurrent`: the same calls, each on a connection of its own,
//! run together in the calling task once every connection is open.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use serde_json::Value as Json;
use tokio::time::Instant;

use super::call::{Call, Reply};
use super::{Limits, Outcome};

type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;
/// How a call ended, and when it started.
type Ended = (Outcome<Json>, Option<Instant>);

/// Runs every call; returns their outcomes in order, and the spread of their first polls.
pub(crate) async fn run<C: sqlx::Connection + 'static>(
    url: &str,
    calls: Vec<Call<C>>,
    limits: Limits,
) -> (Vec<Outcome<Json>>, Option<Duration>) {
    let deadline = limits.batch.map(|batch| Instant::now() + batch);
    let wave_size = limits.max_running.unwrap_or(calls.len()).max(1);
    let mut outcomes = Vec::with_capacity(calls.len());
    let mut starts = Vec::new();
    let mut calls = calls.into_iter().peekable();
    while calls.peek().is_some() {
        let wave: Vec<Call<C>> = calls.by_ref().take(wave_size).collect();
        let (wave_outcomes, wave_starts) = run_wave(url, wave, limits.per_call, deadline).await;
        outcomes.extend(wave_outcomes);
        starts.extend(wave_starts);
    }
    let skew = match (starts.iter().min(), starts.iter().max()) {
        (Some(first), Some(last)) if starts.len() > 1 => Some(last.duration_since(*first)),
        _ => None,
    };
    (outcomes, skew)
}

async fn run_wave<C: sqlx::Connection + 'static>(
    url: &str,
    wave: Vec<Call<C>>,
    per_call: Option<Duration>,
    deadline: Option<Instant>,
) -> (Vec<Outcome<Json>>, Vec<Instant>) {
    // Every connection opens first (all at once): the calls start together, as the children do.
    let connecting: Vec<LocalFuture<'_, _>> = wave
        .iter()
        .map(|_| Box::pin(C::connect(url)) as LocalFuture<'_, _>)
        .collect();
    let connections = join_all(connecting, deadline).await;
    let calls: Vec<LocalFuture<'_, Ended>> = wave
        .into_iter()
        .zip(connections)
        .map(|(call, connection)| {
            let future: LocalFuture<'_, Ended> = Box::pin(async move {
                let mut connection = match connection {
                    Some(Ok(connection)) => connection,
                    Some(Err(err)) => {
                        return (Outcome::Error(format!("cannot connect: {err}")), None);
                    }
                    None => return (Outcome::Timeout, None),
                };
                let started = Instant::now();
                let reply = call.local.call(&mut connection, call.args);
                let reply = match per_call {
                    Some(limit) => match tokio::time::timeout(limit, reply).await {
                        Ok(reply) => reply,
                        Err(_) => return (Outcome::Timeout, Some(started)),
                    },
                    None => reply.await,
                };
                let outcome = match reply {
                    Reply::Value(value) => Outcome::Value(value),
                    Reply::Error(error) => Outcome::Error(error),
                    Reply::Panic(message) => Outcome::Panic(message),
                };
                (outcome, Some(started))
            });
            future
        })
        .collect();
    let results = join_all(calls, deadline).await;
    // What the batch's time limit cut short was dropped (its connection closed): timed out.
    let mut outcomes = Vec::with_capacity(results.len());
    let mut starts = Vec::new();
    for result in results {
        let (outcome, started) = result.unwrap_or((Outcome::Timeout, None));
        outcomes.push(outcome);
        starts.extend(started);
    }
    (outcomes, starts)
}

/// Polls every future together until all are done or `deadline` passes; `None` for those cut
/// short (dropped).
async fn join_all<T>(
    futures: Vec<LocalFuture<'_, T>>,
    deadline: Option<Instant>,
) -> Vec<Option<T>> {
    let mut results: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    let mut pending: Vec<Option<LocalFuture<'_, T>>> = futures.into_iter().map(Some).collect();
    {
        let joined = std::future::poll_fn(|cx| {
            let mut done = true;
            for (slot, result) in pending.iter_mut().zip(results.iter_mut()) {
                if let Some(future) = slot {
                    match future.as_mut().poll(cx) {
                        Poll::Ready(output) => {
                            *result = Some(output);
                            *slot = None;
                        }
                        Poll::Pending => done = false,
                    }
                }
            }
            if done { Poll::Ready(()) } else { Poll::Pending }
        });
        match deadline {
            Some(deadline) => {
                let _ = tokio::time::timeout_at(deadline, joined).await;
            }
            None => joined.await,
        }
    }
    results
}

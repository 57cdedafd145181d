//! The order in which a host hands its due messages to turmoil when several fall due in the
//! same instant: by what they are, never by which task happened to run first.
//!
//! Owns: [`HandOff`], a per-sender board of every message queued on an upstream link and
//! not yet handed over, and the turn a delivery task waits for. Does not own latencies or
//! connection names ([`super::link::Net`] decides those) nor the bytes (the link's pipes).
//!
//! # Why
//!
//! [`super::link`] gives every gateway↔provider message an arrival instant that is the same
//! in both modes. That is not enough when two messages to one host fall due in the same
//! instant: each connection's delivery task wakes from its own timer, and the order the
//! runtime runs those tasks in follows the order their timers were set, which follows the
//! order the gateway's tasks ran, which differs by mode (a non-streaming request runs in its
//! connection's task, a stream in a task of its own). turmoil delivers in the order it was
//! handed messages, and the receiving host reads them in that order. So a fake provider
//! could see two same-instant requests in one order in the stream run and the other order
//! in the non-stream run, number them differently, and fire a scripted `calls: [4]` fault on
//! a different request in each: an equivalence failure the engine did not cause
//! (`switchback replay --seed 93017478 --concurrency always` showed it).
//!
//! Here every message is posted on its sender's board when it is queued, under its arrival
//! instant and its identity on the link: first the gateway request its connection carries
//! (read from its plain HTTP/1.1 head, as the simulation's upstreams speak it), so a
//! provider sees same-instant requests in the gateway's request order. A delivery task
//! whose message is due waits until that message is the smallest first message of every
//! connection with one, then takes it off and writes it at once. A message with a latency
//! was queued before the instant it is due at began, so the board knows every such message
//! when the instant starts, and the hand-off order is the board's order in both modes.
//! (A message with a latency of zero, `latency_ms: [0, ...]`, is posted in the instant it
//! is due, so it may go before or after others due then, as the tasks happen to run.)
//!
//! A connection whose write is blocked by turmoil's flow control (a reader that stopped)
//! is set aside while it is blocked: it never holds up another connection, as a real TCP
//! socket's full buffer holds up only its own stream. (It counts as blocked until its task
//! runs again, so a message due in the instant its reader catches up may overtake it: only
//! under `network.tcp_capacity` with a reader that stopped.)

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::task::{Poll, Waker};

use tokio::time::Instant;

/// A message on a board: when it arrives, then its place among the messages due with it:
/// the gateway request its connection carries, that connection's number among the
/// request's connections to the same host, the connection's name, the direction, and the
/// message's number on the connection. Ordered by arrival first, so everything smaller
/// than a due message is due too.
pub type Posting = (Instant, [u64; 5]);

/// One pipe's part of a board.
#[derive(Default)]
struct PipeState {
    /// Its messages not handed over yet, in the order it queued them: the order its
    /// delivery task takes them in.
    queued: VecDeque<Posting>,
    /// Its delivery is blocked on a write: it holds nobody up meanwhile.
    stalled: bool,
    /// Its delivery task, while it waits for its turn.
    waiting: Option<Waker>,
}

/// One sender's board.
///
/// Only each pipe's first message competes (`heads`): it is the one its delivery task is
/// working on, so the smallest head can always go, and no set of tasks can wait on one
/// another in a circle (which comparing against every posting could, were a pipe's
/// postings ever queued out of board order). Each change wakes one task: the owner of the
/// smallest head, if it waits.
#[derive(Default)]
struct Board {
    pipes: BTreeMap<u64, PipeState>,
    /// The first message of every pipe that has one and is not stalled.
    heads: BTreeSet<(Posting, u64)>,
}

impl Board {
    fn head(&self, pipe: u64) -> Option<(Posting, u64)> {
        let state = self.pipes.get(&pipe)?;
        if state.stalled {
            return None;
        }
        state.queued.front().map(|posting| (*posting, pipe))
    }

    /// Changes `pipe`'s state with `f`, keeps `heads` in step, and wakes the task whose
    /// turn it now is.
    fn change(&mut self, pipe: u64, f: impl FnOnce(&mut PipeState)) {
        if let Some(head) = self.head(pipe) {
            self.heads.remove(&head);
        }
        let state = self.pipes.entry(pipe).or_default();
        f(state);
        if state.queued.is_empty() && !state.stalled && state.waiting.is_none() {
            // Nothing left to know about it: a board does not grow with every connection
            // a long run opens.
            self.pipes.remove(&pipe);
        }
        if let Some(head) = self.head(pipe) {
            self.heads.insert(head);
        }
        if let Some(&(_, next)) = self.heads.first() {
            if let Some(w) = self.pipes.get_mut(&next).and_then(|p| p.waiting.take()) {
                w.wake();
            }
        }
    }
}

/// The boards of one simulated network, one per sending host.
#[derive(Default)]
pub struct HandOff {
    boards: Mutex<BTreeMap<IpAddr, Board>>,
}

impl HandOff {
    fn with_board<R>(&self, sender: IpAddr, f: impl FnOnce(&mut Board) -> R) -> R {
        let mut boards = self.boards.lock().expect("hand-off boards");
        f(boards.entry(sender).or_default())
    }

    /// Puts a message just queued on `pipe` on its sender's board.
    pub fn post(&self, sender: IpAddr, pipe: u64, posting: Posting) {
        self.with_board(sender, |b| {
            b.change(pipe, |state| {
                assert!(
                    state.queued.back().is_none_or(|last| last.0 <= posting.0),
                    "a pipe's messages arrive in the order it queued them: {posting:?} on pipe {pipe}"
                );
                state.queued.push_back(posting);
            });
        });
    }

    /// Takes messages off the board that will never be handed over (the pipe failed, or
    /// its task went away), so they hold nobody up.
    pub fn withdraw(&self, sender: IpAddr, pipe: u64, postings: impl IntoIterator<Item = Posting>) {
        let postings: BTreeSet<Posting> = postings.into_iter().collect();
        if postings.is_empty() {
            return;
        }
        self.with_board(sender, |b| {
            b.change(pipe, |state| state.queued.retain(|p| !postings.contains(p)));
        });
    }

    /// Forgets `pipe` (it is dropped): its messages and its stall.
    pub fn forget(&self, sender: IpAddr, pipe: u64) {
        self.with_board(sender, |b| {
            b.change(pipe, |state| *state = PipeState::default());
        });
    }

    /// Waits until `posting`, `pipe`'s first message and due now, is the smallest first
    /// message of any pipe that could hand one over, then takes it off the board: the
    /// caller writes it before it next yields.
    pub async fn turn(&self, sender: IpAddr, pipe: u64, posting: Posting) {
        std::future::poll_fn(|cx| {
            self.with_board(sender, |b| {
                let state = b.pipes.get_mut(&pipe);
                let state = state.expect("a message waits for its turn only while it is posted");
                assert_eq!(
                    state.queued.front(),
                    Some(&posting),
                    "a pipe hands its messages over in the order it queued them"
                );
                assert!(!state.stalled, "a stalled pipe is writing, not waiting");
                match b.heads.first() {
                    Some(&(_, first)) if first != pipe => {
                        state.waiting = Some(cx.waker().clone());
                        Poll::Pending
                    }
                    _ => {
                        b.change(pipe, |state| {
                            state.queued.pop_front();
                            state.waiting = None;
                        });
                        Poll::Ready(())
                    }
                }
            })
        })
        .await;
    }

    /// Marks `pipe` as blocked on a write (`true`) or free again (`false`).
    pub fn stall(&self, sender: IpAddr, pipe: u64, stalled: bool) {
        self.with_board(sender, |b| b.change(pipe, |state| state.stalled = stalled));
    }

    /// Messages posted and not handed over or withdrawn, and pipes known, over every board.
    #[cfg(test)]
    fn posted(&self) -> (usize, usize) {
        let boards = self.boards.lock().expect("hand-off boards");
        boards.values().fold((0, 0), |(m, p), b| {
            (
                m + b.pipes.values().map(|s| s.queued.len()).sum::<usize>(),
                p + b.pipes.len(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// Whether `posting`'s turn on `pipe` comes within a simulated millisecond (the test's
    /// runtime is paused, so a turn that waits on another message never comes).
    async fn turn_comes(board: &HandOff, pipe: u64, posting: Posting) -> bool {
        tokio::time::timeout(Duration::from_millis(1), board.turn(ip(), pipe, posting))
            .await
            .is_ok()
    }

    fn ip() -> IpAddr {
        "10.0.0.1".parse().expect("ip")
    }

    /// Two messages due in the same instant are handed over in the board's order whichever
    /// task asks first.
    #[tokio::test(start_paused = true)]
    async fn same_instant_messages_go_in_board_order_whoever_asks_first() {
        for smaller_asks_first in [false, true] {
            let board = Arc::new(HandOff::default());
            let at = Instant::now() + Duration::from_millis(5);
            let small: Posting = (at, [1, 0, 0, 0, 0]);
            let big: Posting = (at, [2, 0, 0, 0, 0]);
            board.post(ip(), 7, big);
            board.post(ip(), 8, small);
            let order = Arc::new(Mutex::new(Vec::new()));
            let go = |pipe: u64, posting: Posting, name: &'static str| {
                let (board, order) = (board.clone(), order.clone());
                tokio::spawn(async move {
                    tokio::time::sleep_until(at).await;
                    board.turn(ip(), pipe, posting).await;
                    order.lock().expect("order").push(name);
                })
            };
            let (first, second) = if smaller_asks_first {
                (go(8, small, "small"), go(7, big, "big"))
            } else {
                (go(7, big, "big"), go(8, small, "small"))
            };
            first.await.expect("first");
            second.await.expect("second");
            assert_eq!(*order.lock().expect("order"), ["small", "big"]);
            assert_eq!(board.posted(), (0, 0));
        }
    }

    /// A message due later, a stalled pipe's message and a withdrawn one hold nobody up.
    #[tokio::test(start_paused = true)]
    async fn only_due_messages_of_free_pipes_hold_others_up() {
        let board = HandOff::default();
        let now = Instant::now();
        let later: Posting = (now + Duration::from_millis(3), [0, 0, 0, 0, 0]);
        let stalled: Posting = (now, [1, 0, 0, 0, 0]);
        let withdrawn: Posting = (now, [2, 0, 0, 0, 0]);
        let mine: Posting = (now, [3, 0, 0, 0, 0]);
        board.post(ip(), 1, later);
        board.post(ip(), 2, stalled);
        board.post(ip(), 3, withdrawn);
        board.post(ip(), 4, mine);
        board.stall(ip(), 2, true);
        board.withdraw(ip(), 3, [withdrawn]);
        // Another sender's board is another board.
        board.post("10.0.0.9".parse().expect("ip"), 5, (now, [0, 0, 0, 0, 0]));
        assert!(
            turn_comes(&board, 4, mine).await,
            "nothing due and free is smaller"
        );
        assert_eq!(board.posted(), (3, 3));
    }

    /// Only each pipe's first message competes: a pipe whose second message is smaller
    /// than another pipe's first (a kept-alive connection renamed to an earlier request)
    /// does not make the two wait on each other.
    #[tokio::test(start_paused = true)]
    async fn pipes_never_wait_on_each_other_in_a_circle() {
        let board = Arc::new(HandOff::default());
        let now = Instant::now();
        let a0: Posting = (now, [10, 0, 0, 0, 0]);
        let a1: Posting = (now, [3, 0, 0, 0, 0]);
        let b0: Posting = (now, [5, 0, 0, 0, 0]);
        board.post(ip(), 1, a0);
        board.post(ip(), 1, a1);
        board.post(ip(), 2, b0);
        let order = Arc::new(Mutex::new(Vec::new()));
        let pipe_a = tokio::spawn({
            let (board, order) = (board.clone(), order.clone());
            async move {
                for (posting, name) in [(a0, "a0"), (a1, "a1")] {
                    board.turn(ip(), 1, posting).await;
                    order.lock().expect("order").push(name);
                }
            }
        });
        let pipe_b = tokio::spawn({
            let (board, order) = (board.clone(), order.clone());
            async move {
                board.turn(ip(), 2, b0).await;
                order.lock().expect("order").push("b0");
            }
        });
        tokio::time::timeout(Duration::from_millis(1), async {
            pipe_a.await.expect("pipe a");
            pipe_b.await.expect("pipe b");
        })
        .await
        .expect("no circular wait");
        assert_eq!(*order.lock().expect("order"), ["b0", "a0", "a1"]);
        assert_eq!(
            board.posted(),
            (0, 0),
            "a pipe with nothing left is forgotten"
        );
    }

    /// A dropped pipe's messages and stall go with it.
    #[tokio::test(start_paused = true)]
    async fn a_forgotten_pipe_holds_nobody_up() {
        let board = HandOff::default();
        let now = Instant::now();
        let gone: Posting = (now, [1, 0, 0, 0, 0]);
        let mine: Posting = (now, [2, 0, 0, 0, 0]);
        board.post(ip(), 1, gone);
        board.post(ip(), 2, mine);
        assert!(
            !turn_comes(&board, 2, mine).await,
            "held up by the smaller message"
        );
        board.stall(ip(), 1, true);
        board.stall(ip(), 1, false);
        board.forget(ip(), 1);
        assert!(
            turn_comes(&board, 2, mine).await,
            "goes once the other pipe is forgotten"
        );
        assert_eq!(board.posted(), (0, 0));
    }

    /// A due message of a free pipe does hold a larger one up, until it is handed over.
    #[tokio::test(start_paused = true)]
    async fn a_smaller_due_message_holds_a_larger_one_up() {
        let board = HandOff::default();
        let now = Instant::now();
        let small: Posting = (now, [1, 0, 0, 0, 0]);
        let big: Posting = (now, [2, 0, 0, 0, 0]);
        board.post(ip(), 1, small);
        board.post(ip(), 2, big);
        assert!(
            !turn_comes(&board, 2, big).await,
            "held up by the smaller message"
        );
        board.turn(ip(), 1, small).await;
        assert!(
            turn_comes(&board, 2, big).await,
            "goes once the smaller one went"
        );
        assert_eq!(board.posted(), (0, 0));
    }
}

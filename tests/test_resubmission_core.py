"""Tier 1 (pure): a task id submitted again under shared subscriptions lands on
another agent than the first copy; whoever has it answers, exactly once
(edge_agent/asking.py). Cores wired through an in-memory bus, fake clock."""

import orjson

from fogmesh.announcements import Presence
from fogmesh.edge_agent.actions import Ack, AgentConfig, Publish, Run
from fogmesh.edge_agent.core import AgentCore
from fogmesh.edge_agent.placement import LocalPolicy
from fogmesh.messages import Task
from fogmesh.registry import Registry
from fogmesh.topics import Topics
from tests.coreio import on_disconnect, on_finished, on_message, on_tick

T = Topics("t")
REG = Registry.from_entry_points()
REPLIES = "t/replies/dev"


class Bus:
    """Claims reach every core in one order; inboxes and presence their
    owners; replies are collected; worker runs wait for ``finish``."""

    def __init__(self, *cores):
        self.cores = {c.config.agent_id: c for c in cores}
        self.replies: list[dict] = []
        self.runs: list[tuple[str, str]] = []
        self.acks: list[tuple[str, object]] = []
        self.held_topics: set[str] = set()          # messages to these wait in ``held``
        self.held: list[Publish] = []
        self.frozen: dict[str, list[Publish]] = {}  # agent -> what waits in its socket (SIGSTOP)
        self.queue_connection: int | None = None    # tasks come from a task queue's connection (amqp)

    def deliver(self, actions, now, source=None):
        for a in actions:
            if isinstance(a, Ack):
                self.acks.append((source, a.token))
            elif isinstance(a, Run):
                self.runs.append((source, a.key))
            elif isinstance(a, Publish):
                if a.topic in self.held_topics:
                    self.held.append(a)
                    continue
                if a.topic == REPLIES:
                    self.replies.append(orjson.loads(a.payload))
                for agent, core in self.cores.items():
                    if a.topic in (T.claims, T.agent_inbox(agent)) or T.agent_of_presence(a.topic):
                        if agent in self.frozen:
                            self.frozen[agent].append(a)
                            continue
                        self.deliver(on_message(core, a.topic, a.payload, f"{agent}-ctl", now), now, agent)

    def thaw(self, agent, now):
        """``agent`` continues: it reads what waited for it, in order."""
        for a in self.frozen.pop(agent):
            self.deliver(on_message(self.cores[agent], a.topic, a.payload, f"{agent}-ctl", now), now, agent)

    def task(self, agent, task_id, now, *, attempt=None, kind="sleep"):
        payload = Task(id=task_id, kind=kind, reply_to=REPLIES, args={"ms": 1}, attempt=attempt).encode()
        self.deliver(on_message(self.cores[agent], T.tasks, payload, f"{task_id}@{agent}", now,
                                queue_connection=self.queue_connection), now, agent)

    def finish(self, agent, key, now):
        self.deliver(on_finished(self.cores[agent], key, now, result="done"), now, agent)

    def online(self, now, *agents):
        for agent in agents:
            p = Presence(agent=agent, state="online", ts=now, capacity=1, kinds=REG.names())
            self.deliver([Publish(T.presence(agent), p.encode())], now)


def fabric(*ids):
    cores = [AgentCore(AgentConfig(agent_id=i, topics=T, concurrency=1), REG, policy=LocalPolicy())
             for i in ids]
    bus = Bus(*cores)
    bus.online(0.0, *ids)
    return bus


def test_a_resubmission_of_a_task_a_peer_holds_is_left_to_that_peer():
    bus = fabric("a", "b")
    bus.task("a", "t1", 0.0)                         # the first copy: running on a
    bus.task("b", "t1", 5.0, attempt=2)              # no reply yet: sent again, lands on b
    assert bus.runs == [("a", "t1")]
    assert ("b", "t1@b") in bus.acks                 # b drops its copy
    bus.finish("a", "t1", 6.0)
    assert [r["id"] for r in bus.replies] == ["t1"]


def test_a_resubmission_of_a_task_a_peer_answered_gets_that_answer_again():
    bus = fabric("a", "b")
    bus.task("a", "t1", 0.0)
    bus.finish("a", "t1", 0.1)                       # answered; the reply was lost on the way
    bus.task("b", "t1", 5.0, attempt=2)
    assert bus.runs == [("a", "t1")]
    assert len(bus.replies) == 2 and bus.replies[0] == bus.replies[1]   # the same bytes again


def test_a_resubmission_nobody_has_runs_once_after_everyone_said_so():
    bus = fabric("a", "b", "c")
    bus.task("b", "t1", 5.0, attempt=2)              # the first copy was lost (broker restart)
    winner = [a for a, k in bus.runs if k == "t1"]
    assert winner == ["b"]
    bus.finish("b", "t1", 5.1)
    assert [r["id"] for r in bus.replies] == ["t1"]


def test_the_first_copy_arriving_after_the_question_is_dropped_not_run():
    bus = fabric("a", "b")
    bus.task("b", "t1", 5.0, attempt=2)              # a says "never seen it"
    bus.task("a", "t1", 5.2)                         # then the first copy reaches a, late
    assert [a for a, k in bus.runs if k == "t1"] == ["b"]
    assert ("a", "t1@a") in bus.acks


def test_two_agents_asked_about_the_same_id_at_once_keep_one_copy():
    bus = fabric("a", "b")
    bus.held_topics = {T.claims}                     # both questions cross on the wire
    bus.task("a", "t1", 5.0, attempt=2)
    bus.task("b", "t1", 5.0, attempt=3)
    held, bus.held, bus.held_topics = bus.held, [], set()
    bus.deliver(held, 5.01)
    assert [a for a, k in bus.runs if k == "t1"] == ["a"]


def test_an_agent_waits_for_a_peer_that_has_not_answered_yet():
    bus = fabric("a", "b")
    bus.held_topics = {T.agent_inbox("b")}           # a's answer to b is slow
    bus.task("b", "t1", 5.0, attempt=2)
    assert bus.runs == []
    held, bus.held, bus.held_topics = bus.held, [], set()
    bus.deliver(held, 5.5)
    assert [a for a, k in bus.runs if k == "t1"] == ["b"]


def test_a_peer_that_dies_unanswered_is_no_longer_waited_for():
    bus = fabric("a", "b")
    bus.held_topics = {T.agent_inbox("b")}           # a never answers: it dies
    bus.task("b", "t1", 5.0, attempt=2)
    bus.held, bus.held_topics = [], set()
    will = Presence(agent="a", state="offline", ts=1.0).encode()
    b = bus.cores["b"]
    bus.deliver(on_message(b, T.presence("a"), will, None, 5.1), 5.1, "b")
    bus.deliver(on_tick(b, 5.1 + 2.0), 7.1, "b")       # the takeover grace
    assert [a for a, k in bus.runs if k == "t1"] == ["b"]


def test_alone_a_resubmission_just_runs():
    bus = fabric("solo")
    bus.task("solo", "t1", 0.0, attempt=2)
    assert bus.runs == [("solo", "t1")]


# -- a task queue (RabbitMQ, amqp dispatch) gives back what a lost consumer held -------------

def queue_fabric(*ids):
    cores = [AgentCore(AgentConfig(agent_id=i, topics=T, concurrency=1, task_queue=True), REG,
                       policy=LocalPolicy()) for i in ids]
    bus = Bus(*cores)
    bus.queue_connection = 1
    bus.online(0.0, *ids)
    return bus


def requeued(bus, agent, task_id, now):
    """The queue hands ``agent`` a copy another consumer took (redelivered)."""
    payload = Task(id=task_id, kind="sleep", reply_to=REPLIES, args={"ms": 1}).encode()
    bus.deliver(on_message(bus.cores[agent], T.tasks, payload, f"{task_id}@{agent}", now, dup=True,
                           queue_connection=bus.queue_connection), now, agent)


def test_a_requeued_task_whose_answer_went_out_is_answered_again_not_run_again():
    bus = queue_fabric("a", "b")
    bus.task("a", "t1", 0.0)
    bus.finish("a", "t1", 0.1)             # answered; the broker lost the ack as its node stopped
    requeued(bus, "b", "t1", 0.2)
    assert bus.runs == [("a", "t1")]
    assert len(bus.replies) == 2 and bus.replies[0] == bus.replies[1]   # the same bytes again


def test_a_requeued_task_waits_for_its_reconnecting_holder_and_is_not_run_twice():
    bus = queue_fabric("a", "b")
    bus.task("a", "t1", 0.0)
    bus.finish("a", "t1", 0.1)
    bus.held_topics = {T.claims}           # a is reconnecting: b's question never reaches it
    requeued(bus, "b", "t1", 0.2)
    bus.held, bus.held_topics = [], set()
    assert bus.runs == [("a", "t1")]       # b waits for a (presence still fresh)
    bus.online(1.0, "a")                   # a is back, on another node: asked again
    assert bus.runs == [("a", "t1")]
    assert len(bus.replies) == 2 and bus.replies[0] == bus.replies[1]


def test_a_requeued_task_its_holder_still_says_it_holds_runs_once_that_holder_lets_go():
    from fogmesh.edge_agent import events as ev
    bus = queue_fabric("a", "b")
    bus.task("a", "t1", 0.0)               # running on a, whose queue connection just closed
    requeued(bus, "b", "t1", 0.2)          # a has not noticed yet: "held"
    assert [a for a, k in bus.runs if k == "t1"] == ["a"]
    assert ("b", "t1@b") not in bus.acks   # b keeps its copy: a's hold is void
    bus.deliver(bus.cores["a"].handle(ev.QueueLost(1), 0.3), 0.3, "a")   # a lets go
    bus.online(1.0, "a")                   # a's next presence: asked again, says "never seen it"
    assert [a for a, k in bus.runs if k == "t1"] == ["a", "b"]
    bus.finish("a", "t1", 1.1)             # a's run, stopped, finishing late, answers nothing
    bus.finish("b", "t1", 1.2)
    assert [r["id"] for r in bus.replies] == ["t1"]


def test_a_requeued_task_nobody_answered_runs_once():
    bus = queue_fabric("a", "b", "c")
    requeued(bus, "b", "t1", 0.2)          # its first holder was killed before answering
    assert [a for a, k in bus.runs if k == "t1"] == ["b"]


def test_a_task_queue_agent_losing_its_mqtt_link_claims_nothing_a_later_taker_would_lose_to():
    from fogmesh.edge_agent import events as ev
    bus = queue_fabric("a", "b")
    bus.task("a", "t1", 0.0)                              # running on a
    a = bus.cores["a"]
    dropped = on_disconnect(a, 0.1)                       # a's node stops: MQTT and the queue go
    assert [p for p in dropped if isinstance(p, Publish) and p.topic == T.claims] == []
    bus.deliver(a.handle(ev.QueueLost(1), 0.1), 0.1, "a")
    requeued(bus, "b", "t1", 0.2)                         # the queue gives it to b
    assert [x for x, k in bus.runs if k == "t1"] == ["a", "b"]
    bus.finish("b", "t1", 0.3)
    assert [r["id"] for r in bus.replies] == ["t1"]


def test_a_task_from_the_queue_is_not_journaled_the_queue_gives_it_back_if_its_taker_dies():
    """The queue holds what a consumer has not acknowledged: a journal copy
    resumed after a restart ran tasks its peers had already answered (the
    agent's clean MQTT session never showed it their claims)."""
    from fogmesh.edge_agent.actions import Remember
    bus = queue_fabric("a", "b")
    payload = Task(id="t1", kind="sleep", reply_to=REPLIES, args={"ms": 1}).encode()
    actions = on_message(bus.cores["a"], T.tasks, payload, "t1@a", 0.0)
    assert [x for x in actions if isinstance(x, Remember)] == []
    direct = Task(id="t2", kind="sleep", reply_to=REPLIES, args={"ms": 1}).encode()
    actions = on_message(bus.cores["a"], T.agent_tasks("a"), direct, "t2@a", 0.0)
    assert [x.key for x in actions if isinstance(x, Remember)] == ["t2"]     # MQTT forgets it: the journal keeps it


def test_a_queue_agent_restarted_resumes_only_its_own_direct_tasks_and_remembers_what_it_answered():
    from fogmesh.edge_agent import events as ev
    bus = queue_fabric("a", "b")
    a = bus.cores["a"]
    answered = Task(id="t0", kind="sleep", reply_to=REPLIES, args={"ms": 1}).encode()
    direct = Task(id="t2", kind="sleep", reply_to=REPLIES, args={"ms": 1}).encode()
    bus.deliver(a.handle(ev.Restored(["t0"], [direct], {}), 0.0), 0.0, "a")
    assert [k for x, k in bus.runs if x == "a"] == ["t2"]
    bus.deliver(on_message(a, T.tasks, answered, "t0@a", 0.1, dup=True), 0.1, "a")
    assert ("a", "t0") not in bus.runs


# -- a takeover round's winner answers; the losers keep a copy until they hear of it -------------

def test_a_takeover_won_and_answered_is_not_contested_when_its_winner_comes_back_after_a_will():
    """Seed 2 of the random schedules: a task redelivered to two agents (DUP)
    is competed for under its takeover key; a wins and answers; b keeps a
    copy. The broker then stops (SIGTERM: every will published) and comes
    back; when a says online again in a new epoch, b contested what a had won
    in the old one, won the next round uncontested (a had answered and held
    nothing) and ran the task a second time."""
    bus = fabric("a", "b")
    payload = Task(id="t1", kind="sleep", reply_to=REPLIES, args={"ms": 1}).encode()
    bus.task("b", "busy", 0.0)                                   # b's one worker is busy: t1 waits there
    bus.deliver(on_message(bus.cores["b"], T.tasks, payload, "t1@b", 0.0), 0.0, "b")
    bus.deliver(on_message(bus.cores["a"], T.tasks, payload, "t1@a", 0.01, dup=True), 0.01, "a")
    assert [k for _, k in bus.runs] == ["busy", "t1"] and ("a", "t1") in bus.runs
    bus.finish("a", "t1", 0.1)
    assert [r["id"] for r in bus.replies] == ["t1"]
    will = Presence(agent="a", state="offline", ts=1.0, capacity=1, kinds=REG.names())
    bus.deliver(on_message(bus.cores["b"], T.presence("a"), will.encode(), "will", 1.0), 1.0, "b")
    back = Presence(agent="a", state="online", ts=5.0, capacity=1, kinds=REG.names(), epoch=1)
    bus.deliver(on_message(bus.cores["b"], T.presence("a"), back.encode(), "back", 5.0), 5.0, "b")
    bus.deliver(on_tick(bus.cores["b"], 10.0), 10.0, "b")
    bus.finish("b", "busy", 10.0)
    assert [k for x, k in bus.runs if x == "b"] == ["busy"]
    assert [r["id"] for r in bus.replies] == ["t1", "busy"]


def test_a_claim_from_a_peer_restarted_after_its_will_shows_it_alive_and_its_round_is_not_contested():
    """Seed 1 of the random schedules: b stopped (its will came, its death was
    handled), started again and, before its presence said online (held until
    its task subscriptions are in), won t1's takeover round with a copy its
    session gave back. a, which got t1 from a rescued session, took b for
    dead still, claimed the next round uncontested and ran t1 a second time."""
    from fogmesh.claims import Claim
    a = AgentCore(AgentConfig(agent_id="a", topics=T, concurrency=1, instance="ia"), REG, policy=LocalPolicy())
    on_message(a, T.presence("b"), Presence(agent="b", state="online", ts=0.0, capacity=1, kinds=REG.names(),
                                             instance="ib1").encode(), "p", 0.0)
    on_message(a, T.presence("b"), Presence(agent="b", state="offline", ts=1.0, capacity=1, kinds=REG.names(),
                                             instance="ib1").encode(), "will", 1.0)
    on_tick(a, 10.0)                                       # b's death is handled
    on_message(a, T.claims, Claim("t1#t", "b", instance="ib2").encode(), "c", 11.0)   # b's new run wins t1
    payload = Task(id="t1", kind="sleep", reply_to=REPLIES, args={"ms": 1}).encode()
    actions = on_message(a, T.tasks, payload, "t1@a", 11.1, dup=True)
    assert not [x for x in actions if isinstance(x, (Run, Publish))], actions


def test_a_claim_resent_after_its_makers_will_does_not_show_it_alive():
    """A claim made before a drop, resent by its client after the will (the
    same run, the same epoch), says nothing about the agent being back."""
    from fogmesh.claims import Claim
    from fogmesh.edge_agent.deaths import DeathWatch
    deaths = DeathWatch()
    deaths.will("b", 1.0, 1.0, instance="ib1", epoch=2)
    assert not deaths.revived("b", instance="ib1", epoch=2)
    assert not deaths.revived("b", instance=None, epoch=None)
    assert deaths.revived("b", instance="ib1", epoch=3)
    assert deaths.revived("b", instance="ib2", epoch=None)
    assert Claim.decode(Claim("t1#t", "b", instance="ib2").encode()).instance == "ib2"


def test_a_task_given_back_after_a_restart_gets_the_answer_the_journal_kept():
    """Seed 1 of the random schedules: the broker stopped as a's answer left
    (withdrawn, unconfirmed), then a was stopped too. Restarted, its journal
    said the task was answered, its session gave the task back (the ack, in
    the answer's write, never reached the broker), and a acknowledged it
    without answering: lost."""
    from fogmesh.edge_agent import events as ev
    from fogmesh.edge_agent.answer_book import StoredAnswer
    a = AgentCore(AgentConfig(agent_id="a", topics=T, concurrency=1), REG, policy=LocalPolicy())
    reply = b'{"id":"t1","status":"ok","result":1,"worker":"a","tier":"local"}'
    a.handle(ev.Restored(["t1"], [], {"t1": StoredAnswer(REPLIES, reply)}), 0.0)
    payload = Task(id="t1", kind="sleep", reply_to=REPLIES, args={"ms": 1}).encode()
    again = on_message(a, T.tasks, payload, "t1@a", 0.1, dup=True)
    assert [x.payload for x in again if isinstance(x, Publish)] == [reply]
    assert [x for x in on_message(a, T.tasks, payload, "t1@a2", 0.2, dup=True) if isinstance(x, Publish)] == []


def test_an_agent_back_from_a_freeze_asks_before_running_what_waited_in_its_socket():
    """Seed 5 of the random schedules: b was frozen (SIGSTOP) for 11 s. The
    broker had sent it t1, which waited in its socket; the device sent t1
    again (no reply), a ran it without asking b (stale). b, continued, ran
    its copy too."""
    cores = [AgentCore(AgentConfig(agent_id=i, topics=T, concurrency=1, presence_stale_s=1.5), REG,
                       policy=LocalPolicy()) for i in ("a", "b")]
    bus = Bus(*cores)
    bus.online(0.0, "a", "b")
    bus.frozen["b"] = []                           # SIGSTOP: b reads nothing from now on
    for i in range(1, 19):                         # a steps on (its presence every 0.5 s)
        bus.online(i / 2, "a")
    bus.task("a", "t1", 9.0, attempt=2)            # b's presence is stale, but b may be frozen: a asks it
    assert bus.runs == []                          # ... and waits (stale is not dead)
    bus.task("b", "t1", 11.3)                      # SIGCONT: the first copy, sent to it before the freeze,
    bus.thaw("b", 11.4)                            # waited in its socket before a's question
    assert bus.runs == [("a", "t1")]               # the asker keeps it (b learnt of it from a), once
    bus.finish("a", "t1", 11.5)
    assert len(bus.replies) == 1


def test_an_answer_cut_off_whose_task_the_broker_does_not_give_back_goes_out_anyway():
    """Seed 8 of the random schedules: the broker was SIGKILLed as a's answer
    left (withdrawn, unconfirmed); restarted from its last save (30 s old), it
    had a's session but not the task, so the task never came back and the
    answer waited for it for ever."""
    from fogmesh.edge_agent import events as ev
    from tests.coreio import on_connected
    a = AgentCore(AgentConfig(agent_id="a", topics=T, concurrency=1), REG, policy=LocalPolicy())
    on_connected(a, 0.0, control=False)
    payload = Task(id="t1", kind="sleep", reply_to=REPLIES, args={"ms": 1}).encode()
    on_message(a, T.tasks, payload, "t1@a", 0.0)
    answer = [x for x in on_finished(a, "t1", 0.1, result="done") if isinstance(x, Publish) and x.topic == REPLIES]
    a.handle(ev.LinkChanged(control=False, up=False), 0.2)
    on_withdrawn_ = a.handle(ev.Withdrawn(answer, control=False), 0.2)
    assert on_withdrawn_ == []
    on_connected(a, 3.0, control=False, session_kept=True)   # a session, but the task is not in it
    assert [x for x in on_tick(a, 4.0) if isinstance(x, Publish)] == []      # still waiting for it
    again = [x for x in on_tick(a, 8.1) if isinstance(x, Publish)]
    assert [x.payload for x in again] == [answer[0].payload]
    assert [x for x in on_tick(a, 20.0) if isinstance(x, Publish)] == []     # once


def test_a_peer_frozen_after_answering_is_waited_for_until_its_will_not_taken_for_gone():
    """Seed 39 of the random schedules, on a loaded box: b ran t1 and
    answered, then froze (SIGSTOP). The device sent t1 again, to a, which
    asked b; b's presence went stale, a stopped waiting for it and ran t1 a
    second time. Stale is not dead: a frozen peer keeps what it holds and
    what it answered, and is waited for until its will says it is gone."""
    cores = [AgentCore(AgentConfig(agent_id=i, topics=T, concurrency=1, presence_stale_s=1.5), REG,
                       policy=LocalPolicy()) for i in ("a", "b")]
    bus = Bus(*cores)
    bus.online(0.0, "a", "b")
    bus.task("b", "t1", 0.1)
    bus.finish("b", "t1", 0.2)                     # b's answer is out
    bus.frozen["b"] = []                           # SIGSTOP: b reads nothing from now on
    bus.task("a", "t1", 0.4, attempt=2)            # the device asks again; a asks b
    for i in range(1, 19):                         # a steps on (its presence every 0.5 s): b goes stale
        bus.online(0.4 + i / 2, "a")
        bus.deliver(on_tick(cores[0], 0.4 + i / 2), 0.4 + i / 2, "a")
    assert bus.runs == [("b", "t1")]               # a still waits for b
    bus.thaw("b", 9.5)                             # SIGCONT: b answers the question
    assert bus.runs == [("b", "t1")]
    assert len(bus.replies) == 2 and bus.replies[0] == bus.replies[1]   # b's answer again, not a second run


def test_a_peer_asked_about_a_task_that_dies_is_no_longer_waited_for():
    """The other side: a peer that froze and whose will came (the broker
    dropped it after 1.5 keep-alives) is gone; the asker then competes for
    the task and runs it once."""
    cores = [AgentCore(AgentConfig(agent_id=i, topics=T, concurrency=1, presence_stale_s=1.5), REG,
                       policy=LocalPolicy()) for i in ("a", "b")]
    bus = Bus(*cores)
    bus.online(0.0, "a", "b")
    bus.frozen["b"] = []
    bus.task("a", "t1", 0.4, attempt=2)
    will = Presence(agent="b", state="offline", ts=5.0, capacity=1, kinds=REG.names())
    bus.deliver(on_message(cores[0], T.presence("b"), will.encode(), "a-ctl", 5.0), 5.0, "a")
    for i in range(1, 60):
        now = 5.0 + i / 2
        bus.deliver(on_tick(cores[0], now), now, "a")
        if bus.runs:
            break
    assert bus.runs == [("a", "t1")]


def test_an_offer_redelivered_or_read_after_a_freeze_or_a_reconnect_is_refused_as_stale():
    """Seed 39 again: b was offered r-300 by a (lease 1 s), was frozen, then
    SIGTERMed and started again; its session gave the offer back (DUP) 18 s
    later, b accepted and ran it, and a had long run it itself."""
    from fogmesh.edge_agent import events as ev
    from fogmesh.offers import Offer
    from tests.coreio import on_connected
    b = AgentCore(AgentConfig(agent_id="b", topics=T, concurrency=1, presence_stale_s=1.5), REG,
                  policy=LocalPolicy())
    on_connected(b, 0.0, control=True, session_kept=False)
    task = Task(id="t1", kind="sleep", reply_to=REPLIES, args={"ms": 1})

    def offer(n, now, *, dup=False):
        payload = Offer(f"a:t1:{n}", "a", task, 1000).encode()
        out = b.handle(ev.MessageIn(T.agent_inbox("b"), payload, f"o{n}", dup=dup), now)
        return [orjson.loads(x.payload) for x in out if isinstance(x, Publish) and x.topic == T.agent_inbox("a")]

    assert offer(1, 1.0, dup=True)[0]["reason"] == "stale"                # redelivered
    on_connected(b, 10.0, control=True, session_kept=True)               # back, its session kept
    assert offer(2, 11.0)[0]["reason"] == "stale"                         # waited in the session
    b.handle(ev.Tick(), 30.0)                                             # 15 s without a step: frozen
    assert offer(3, 30.1)[0]["reason"] == "stale"                         # waited in the socket
    for i in range(1, 12):
        b.handle(ev.Tick(), 30.1 + i / 2)                                 # steps on, its presence period 0.5 s
    assert offer(4, 36.0)[0]["op"] == "accept"                            # caught up: offers are taken again


def test_a_peer_silent_without_a_will_is_given_up_after_gone_silent_s():
    """A peer whose connection a broker restart took has no will: the asker
    gives it up once it was silent for ``gone_silent_s`` and runs the task
    once (else the task would wait for ever)."""
    cores = [AgentCore(AgentConfig(agent_id=i, topics=T, concurrency=1, presence_stale_s=1.5, gone_silent_s=20.0),
                       REG, policy=LocalPolicy()) for i in ("a", "b")]
    bus = Bus(*cores)
    bus.online(0.0, "a", "b")
    bus.frozen["b"] = []                           # b says nothing more, and no will comes
    bus.task("a", "t1", 0.4, attempt=2)
    for i in range(1, 60):
        now = 0.4 + i / 2
        bus.online(now, "a")
        bus.deliver(on_tick(cores[0], now), now, "a")
        assert bus.runs == [] or now > 20.0, now   # waited for b until it was silent 20 s
    assert bus.runs == [("a", "t1")]               # then ran it, once


def test_a_peer_slower_than_its_presence_is_not_asked_again_at_every_presence():
    """#36 audit, seed 39 on a loaded box: peers that took longer than their
    0.5 s presence period to answer got every open question again at every
    presence (3,000 asks and answers for 90 tasks) and the asker never ran
    them. A question goes again at most every REASK_AFTER_S."""
    from fogmesh.edge_agent.ask_book import REASK_AFTER_S
    bus = fabric("a", "b")
    bus.held_topics.add(T.agent_inbox("a"))         # b's answers are slow: held back
    bus.task("a", "t1", 1.0, attempt=2)
    asks = lambda: [p for p in bus.held if p.topic == T.claims]   # noqa: E731
    bus.held_topics.add(T.claims)
    for i in range(1, 12):                          # b announces itself every 0.5 s on one link, answer pending
        p = Presence(agent="b", state="online", ts=1.0 + i / 2, capacity=1, kinds=REG.names(), epoch=1)
        bus.deliver([Publish(T.presence("b"), p.encode())], 1.0 + i / 2)
    assert len(asks()) <= 1 + int(5.5 // REASK_AFTER_S)  # asked again every 3 s at most, not 11 times

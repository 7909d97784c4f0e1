"""Generate the demo's support tickets, deterministically: `python examples/demo/data/generate.py`.

The story `tuneloop demo` tells: a ticket router (MiniLM-L6, five queues) is trained on the
tickets of spring (revision 1). Then the product and the support organisation change, and the
freshly labelled tickets of the next weeks look different:

- a new product, **Ledger** (time tracking and invoicing for our customers' own clients):
  its tickets talk about invoices, payments, refunds and charges, but they are questions
  (`how_to`) and defects (`bug_report`) of Ledger, not our customers' own bill (`billing`);
- a queue that grew: the retention team now owns downgrades, pauses and seat reductions,
  so those are routed to `cancellation` (they used to be `billing`);
- new wording: the mobile chat widget brings short, lower-case, abbreviated messages.

Files (JSON lines: ticket_id, channel, text, queue; rows shuffled with a fixed seed):
    base.jsonl           revision 1's training data: examples/local/tickets.jsonl (hand-written)
                         plus generated tickets in the same style
    fresh-base.jsonl     freshly labelled tickets before the shift (the first evaluations)
    shifted.jsonl        the new training batch after the shift (added to the training prefix)
    fresh-shifted.jsonl  freshly labelled tickets after the shift (the evaluation that degrades)

The shifted files share templates but never a sentence: every text is unique across all files.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
HAND_WRITTEN = HERE.parents[1] / "local" / "tickets.jsonl"
SEED = 2026

# --- the base distribution: the five queues as they were in spring -----------------------------

FEATURES = ["boards", "tasks", "the calendar view", "comments", "file uploads", "the Gantt chart", "recurring tasks",
            "labels", "the timeline", "dashboards", "reminders", "checklists", "templates", "the search"]
INTEGRATIONS = ["Slack", "Google Drive", "Jira", "GitHub", "Outlook", "Zapier", "Salesforce", "Dropbox"]
PLANS = ["Pro", "Business", "Team", "Enterprise"]
MONTHS = ["January", "February", "March", "April", "May", "June"]

BASE = {
    "billing": [
        "I was charged twice for the {plan} plan in {month}.",
        "Our card was declined but the invoice still says paid, which is it?",
        "Can you send the {month} invoice with our VAT number on it?",
        "Why did the price of the {plan} plan go up on our last invoice?",
        "We need a refund for the seats we were billed for in {month}.",
        "The receipt for {month} shows the wrong company address.",
        "Please update the credit card on file for our {plan} subscription.",
        "We paid by bank transfer for {month} but the account shows an outstanding balance.",
        "Is the {plan} plan billed per seat or per workspace?",
        "I see a charge from you I don't recognise, dated {month}.",
    ],
    "account_access": [
        "I can't log in, it says my password is wrong but I just reset it.",
        "The two-factor code from my authenticator app is never accepted.",
        "How do I give admin rights to a new teammate in our workspace?",
        "I'm locked out after too many login attempts, please unlock my account.",
        "Our SSO login redirects to an error page since this morning.",
        "I changed my email address and now I can't sign in with the new one.",
        "A former employee still has access to our workspace, how do we remove them?",
        "The invite link for our workspace says it has expired.",
        "I lost my phone with the 2FA app, how can I get back into my account?",
        "Please transfer ownership of the workspace to {name}.",
    ],
    "bug_report": [
        "{feature} won't load, I just get a spinning wheel.",
        "The {integration} integration stopped syncing yesterday.",
        "Dragging a card between columns puts it in the wrong place.",
        "{feature} shows tasks from another project, looks like a bug.",
        "Attachments over 10 MB fail to upload with an unknown error.",
        "The app crashes every time I open {feature} on Android.",
        "Notifications arrive twice for every comment.",
        "Dates in {feature} are shifted by one day after the daylight saving change.",
        "Exporting {feature} to CSV produces an empty file.",
        "Since the last update {feature} freezes the browser tab.",
    ],
    "how_to": [
        "How do I connect {integration} to our workspace?",
        "Is there a way to duplicate {feature} with all their settings?",
        "Can I set up {feature} so they repeat every week?",
        "How can I filter {feature} by assignee?",
        "Where do I change the default view of {feature}?",
        "Can guests see {feature} or only members?",
        "How do I archive old {feature} without deleting them?",
        "What's the keyboard shortcut to create a new task?",
        "Can I import our tasks from {integration}?",
        "How do I share {feature} with a client as read-only?",
    ],
    "cancellation": [
        "Please cancel our {plan} subscription at the end of this billing period.",
        "We're moving to another tool, how do we close our account?",
        "Delete my account and all my data, please.",
        "We no longer need the workspace, please shut it down.",
        "I want to cancel before the trial converts to a paid plan.",
        "Our team is disbanding, cancel everything and confirm in writing.",
        "How do I cancel the {plan} plan without losing our exported data?",
        "Terminate our contract when it ends in {month}, we won't renew.",
        "Please close the workspace of {name}, they left the company.",
        "Stop the subscription, we are not using the product anymore.",
    ],
}

# --- after the shift ------------------------------------------------------------------------------

LEDGER = ["Ledger", "Ledger invoicing", "the Ledger add-on", "Ledger"]
CLIENTS = ["my client", "our customer", "a client of ours", "one of our clients", "the client"]

SHIFTED = {
    # Ledger's defects: invoice and payment words, but bugs of the new product.
    "bug_report": [
        "{ledger} sends invoices to {client} with the wrong currency.",
        "Payment reminders from {ledger} never reach {client}.",
        "{ledger} marks an invoice as paid although {client} hasn't paid it.",
        "The PDF invoice {ledger} generates for {client} cuts off the last line items.",
        "Tracked hours don't appear on the invoice {ledger} creates for {client}.",
        "{ledger} charges {client} tax twice on the same invoice.",
        "refund to {client} in {ledger} fails w/ error 500",
        "{ledger} invoice numbers jump from 41 to 52, the ones between are missing",
        "ledger app crashes when i tap send invoice",
        "recurring invoices in {ledger} went out twice this month",
    ],
    # Ledger's how-tos.
    "how_to": [
        "How do I add our logo to the invoices {ledger} sends to {client}?",
        "Can {ledger} bill {client} by the hour from our timesheets?",
        "How do I set up a payment plan for {client} in {ledger}?",
        "Where do I change the payment terms on {ledger} invoices to 30 days?",
        "Can {client} pay an invoice from {ledger} by card?",
        "how do i issue a credit note to {client} in {ledger}",
        "How can I send {client} a refund through {ledger}?",
        "Is there a way to charge {client} a late fee automatically in {ledger}?",
        "how to export all {ledger} invoices for our accountant",
        "Can {ledger} invoice {client} in euros and dollars?",
    ],
    # The retention team's queue grew: downgrades, pauses and fewer seats are cancellation now.
    "cancellation": [
        "Please downgrade us from {plan} to the Starter plan next month.",
        "We'd like to pause our subscription for three months over the summer.",
        "Can we reduce our seats from 40 to 15 at renewal?",
        "Switch our {plan} plan to the cheaper monthly tier, budget got cut.",
        "pls downgrade to free plan, we only use it occasionally now",
        "We need fewer licences after the reorg, drop us to 10 seats.",
        "Can we freeze the account while the project is on hold?",
        "move us to a smaller plan from {month} on",
        "Our {plan} plan is too expensive now, what's the cheapest plan we can move to?",
        "We want to stop paying for the {plan} features we don't use, downgrade please.",
    ],
    # Our own bill, chat-style: still billing.
    "billing": [
        "double charged this month??",
        "need the {month} receipt w/ our VAT id pls",
        "why is our card charged for {plan} when we're on Team",
        "invoice for {month} has the wrong address again",
        "got billed for seats we removed in {month}",
        "card charged but {plan} still shows unpaid",
        "can u resend the {month} invoice to finance",
        "our {month} bill is way higher than usual, why",
    ],
    # Login trouble, chat-style: still account_access.
    "account_access": [
        "cant log in on mobile, says session expired",
        "2fa code not accepted on the new phone",
        "sso loop on login since update",
        "locked out after pw reset, help",
        "invite link dead for new hire {name}",
        "{name} cant access the workspace after email change",
        "reset pw mail never comes",
        "make {name} an admin pls, cant find where",
    ],
}
# The queue that grew and the new product dominate the fresh tickets, as they would.
SHIFT_WEIGHTS = {"bug_report": 3, "how_to": 3, "cancellation": 3, "billing": 1, "account_access": 1}

NAMES = ["Priya", "Jonas", "Amara", "Luis", "Mei", "Tomasz", "Fatima", "Noah", "Sven", "Aiko"]
OPENERS = ["", "", "", "Hi, ", "Hello team, ", "Hey, ", "Urgent: ", "Quick question: ", "Good morning, "]
CLOSERS = ["", "", "", " Thanks!", " Thank you.", " Any help appreciated.", " Cheers.", " This is blocking us."]
CHAT_CLOSERS = ["", "", " pls", " asap", " thx", " !!", " - urgent", " ty", " ??", " (again)"]
CHANNELS = ["email", "chat", "web_form", "mobile_chat"]


def fill(template: str, rng: random.Random) -> str:
    return template.format(plan=rng.choice(PLANS), month=rng.choice(MONTHS), feature=rng.choice(FEATURES),
                           integration=rng.choice(INTEGRATIONS), name=rng.choice(NAMES),
                           ledger=rng.choice(LEDGER), client=rng.choice(CLIENTS))


def ticket(template: str, rng: random.Random) -> str:
    text = fill(template, rng)
    if text[0].islower():  # chat-style messages keep their casing: no greeting, a chat sign-off
        return text + rng.choice(CHAT_CLOSERS)
    text = rng.choice(OPENERS) + text[0].lower() + text[1:] if rng.random() < 0.35 else text
    return (text[0].upper() + text[1:] + rng.choice(CLOSERS)).strip()


def generate(pool: dict[str, list[str]], count: int, rng: random.Random, seen: set[str],
             weights: dict[str, int] | None = None) -> list[tuple[str, str]]:
    queues = [q for q in pool for _ in range((weights or {}).get(q, 1))]
    rows: list[tuple[str, str]] = []
    attempts = 0
    while len(rows) < count:
        attempts += 1
        if attempts > count * 200:
            raise RuntimeError(f"templates too few for {count} unique tickets")
        queue = queues[len(rows) % len(queues)]
        text = ticket(rng.choice(pool[queue]), rng)
        if text.lower() in seen:
            continue
        seen.add(text.lower())
        rows.append((text, queue))
    return rows


def write(name: str, rows: list[tuple[str, str]], rng: random.Random, first_id: int,
          channels: list[str] | None = None) -> None:
    rng.shuffle(rows)
    with open(HERE / name, "w") as f:
        for i, (text, queue) in enumerate(rows):
            record = {"ticket_id": first_id + i, "channel": rng.choice(channels or CHANNELS[:3]), "text": text, "queue": queue}
            f.write(json.dumps(record) + "\n")


def main() -> None:
    rng = random.Random(SEED)
    hand = [json.loads(line) for line in HAND_WRITTEN.read_text().splitlines() if line.strip()]
    seen = {r["text"].strip().lower() for r in hand}
    base = [(r["text"], r["queue"]) for r in hand] + generate(BASE, 100, rng, seen)
    fresh_base = generate(BASE, 100, rng, seen)
    shifted = generate(SHIFTED, 220, rng, seen, SHIFT_WEIGHTS)
    fresh_shifted = generate(SHIFTED, 120, rng, seen, SHIFT_WEIGHTS)
    write("base.jsonl", base, rng, 20000)
    write("fresh-base.jsonl", fresh_base, rng, 30000)
    write("shifted.jsonl", shifted, rng, 40000, CHANNELS)
    write("fresh-shifted.jsonl", fresh_shifted, rng, 50000, CHANNELS)
    for name in ("base.jsonl", "fresh-base.jsonl", "shifted.jsonl", "fresh-shifted.jsonl"):
        print(f"{name}: {sum(1 for _ in open(HERE / name))} tickets")


if __name__ == "__main__":
    main()

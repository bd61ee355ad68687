"""aiosmtpd handlers for mail_test.go.

Store keeps every mail in a Maildir, as aiosmtpd.handlers.Mailbox does, but answers
"550" to a recipient whose address starts with "reject", the permanent refusal a real
server gives for an unknown mailbox.
"""
from aiosmtpd.handlers import Mailbox


class Store(Mailbox):
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("reject"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

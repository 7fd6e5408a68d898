"""Pure mail protocol code: addresses, MIME, SMTP replies. No sockets, no AWS."""

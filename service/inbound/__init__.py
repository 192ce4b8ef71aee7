"""What comes back after the relay said 250: bounces and complaints, from wherever they
arrive — Nashra's own inbound SMTP server (smtp_server), a bounce mailbox read over IMAP
(mailbox), the providers' signed webhooks (webhooks/) — read by one classifier
(classify, reports) and applied to the ledger and the suppression list by one set of
rules (actions)."""

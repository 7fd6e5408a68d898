"""The only modules that talk to the outside world (boto3, smtplib)."""

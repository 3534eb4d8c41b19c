resource "aws_iam_role" "trust_account" {
  name               = "trust_account"
  assume_role_policy = <<POLICY
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": "sts:AssumeRole",
      "Principal": {
        "AWS": "arn:aws:iam::210987654321:root"
      }
    }
  ]
}
POLICY
}

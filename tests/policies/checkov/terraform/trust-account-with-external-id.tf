resource "aws_iam_role" "trust_external_id" {
  name               = "trust_external_id"
  assume_role_policy = <<POLICY
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": "sts:AssumeRole",
      "Principal": {
        "AWS": "210987654321"
      },
      "Condition": {
        "StringEquals": {
          "sts:ExternalId": "f3a9c"
        }
      }
    }
  ]
}
POLICY
}

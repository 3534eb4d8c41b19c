resource "aws_s3_bucket_policy" "own_org" {
  bucket = "models"
  policy = <<POLICY
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Principal": "*",
      "Action": "s3:GetObject",
      "Resource": "arn:aws:s3:::models/*",
      "Condition": {
        "StringEquals": {
          "aws:PrincipalOrgID": "o-abc"
        }
      }
    }
  ]
}
POLICY
}

resource "aws_s3_bucket_policy" "star" {
  bucket = "models"
  policy = <<POLICY
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Principal": "*",
      "Action": "s3:GetObject",
      "Resource": "arn:aws:s3:::models/*"
    }
  ]
}
POLICY
}

resource "aws_s3_bucket" "grant_all_users" {
  bucket = "models-grant-all-users"
}

resource "aws_s3_bucket_acl" "grant_all_users" {
  bucket = aws_s3_bucket.grant_all_users.id
  access_control_policy {
    owner {
      id = "o"
    }
    grant {
      permission = "READ"
      grantee {
        type = "Group"
        uri  = "http://acs.amazonaws.com/groups/global/AllUsers"
      }
    }
  }
}

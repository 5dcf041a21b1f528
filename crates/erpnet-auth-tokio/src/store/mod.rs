//! Where sessions live when several tasks or processes serve one user.
